import { html } from 'htm/preact'
import { useState } from 'preact/hooks'
import { ApiError, api, type FieldError } from '../api.ts'
import { useLiveEvent } from '../live.ts'
import { href, navigate, type Route } from '../router.ts'
import { isAdmin, primaryObject, useSigned } from '../session.ts'
import { FIELD_TYPES, type FieldSpec, type FieldType, type ObjectSchemaDoc, type SchemaChange, type SchemaVersion } from '../types.ts'
import { Badge, Card, ErrorBox, formatTime, Loading, type Tone, timeAgo, useApi, useToast } from '../ui.ts'

/** A field's constraints in a few words: `one of debit | credit, max 128 chars`. */
function describeConstraints(spec: FieldSpec): string[] {
  const parts: string[] = []
  if (spec.enum) parts.push(`one of ${spec.enum.join(' | ')}`)
  if (spec.pattern) parts.push(`pattern ${spec.pattern}`)
  if (spec.maxLength !== undefined) parts.push(`max ${spec.maxLength} chars`)
  if (spec.minimum !== undefined) parts.push(`≥ ${spec.minimum}`)
  if (spec.maximum !== undefined) parts.push(`≤ ${spec.maximum}`)
  return parts
}

/** A field's type and constraints: `string, nullable, max 128 chars`. */
function describeSpec(spec: FieldSpec): string {
  return [spec.type, ...(spec.nullable ? ['nullable'] : []), ...describeConstraints(spec)].join(', ')
}

/** One line a person reads in the version history. */
function describeChange(c: SchemaChange): { sign: '+' | '−' | '~'; text: string } {
  switch (c.op) {
    case 'add_field':
      return { sign: '+', text: `added ${c.field}: ${describeSpec(c.spec)}` }
    case 'remove_field':
      return { sign: '−', text: `removed ${c.field} (was ${describeSpec(c.spec)}); stored values stay in history` }
    case 'make_nullable':
      return { sign: '~', text: `${c.field} became optional (nullable)` }
    case 'make_required':
      return { sign: '~', text: `${c.field} became required` }
    case 'change_type':
      return { sign: '~', text: `${c.field} type ${c.from} → ${c.to}` }
    case 'change_constraints':
      return { sign: '~', text: `${c.field}: ${describeSpec(c.from)} → ${describeSpec(c.to)}` }
    case 'change_meta':
      return { sign: '~', text: `${c.what} ${c.from ?? '(none)'} → ${c.to ?? '(none)'}` }
  }
}

const REASON_TONE: Record<SchemaVersion['reason'], Tone> = { default: 'muted', manual: 'info', auto: 'warn' }

function FieldsTable(props: { schema: ObjectSchemaDoc }) {
  const { schema } = props
  return html`<table class="data" data-testid="schema-fields">
    <thead><tr><th>Field</th><th>Type</th><th>Required</th><th>Constraints</th><th>Description</th></tr></thead>
    <tbody>
      ${Object.entries(schema.fields).map(
        ([name, spec]) => html`<tr key=${name}>
          <td><code>${name}</code>${name === schema.id_field && html` <${Badge} tone="info">id</${Badge}>`}${name === schema.time_field && html` <${Badge} tone="info">time</${Badge}>`}</td>
          <td>${spec.type}</td>
          <td>${spec.nullable ? html`<span class="muted">optional</span>` : 'required'}</td>
          <td class="small">${describeConstraints(spec).join(', ') || html`<span class="muted">—</span>`}</td>
          <td class="small muted">${spec.description ?? ''}</td>
        </tr>`,
      )}
    </tbody>
  </table>`
}

function VersionHistory(props: { versions: SchemaVersion[]; selected: number; object: string }) {
  return html`<ol class="versions" data-testid="schema-versions">
    ${[...props.versions].reverse().map(
      (v) => html`<li key=${v.version} class=${v.version === props.selected ? 'selected' : ''} data-version=${v.version}>
        <a class="version-head" href=${href(['schemas', props.object], { version: String(v.version) })}>
          <b>v${v.version}</b> <${Badge} tone=${REASON_TONE[v.reason]}>${v.reason}</${Badge}>
          <span class="muted small">by ${v.created_by} · <span title=${v.created_at}>${timeAgo(v.created_at)}</span></span>
        </a>
        ${v.reason === 'auto' && v.trigger_record_id && html`<div class="small muted">made by record <a href=${href(['records', props.object], { record: v.trigger_record_id })}><code>${v.trigger_record_id}</code></a></div>`}
        ${
          v.reason === 'default'
            ? html`<div class="small muted">the built-in schema, loaded on first start</div>`
            : html`<ul class="diff">${v.diff.map((c) => {
                const line = describeChange(c)
                return html`<li class=${`diff-${line.sign === '+' ? 'add' : line.sign === '−' ? 'remove' : 'change'}`}><span class="diff-sign">${line.sign}</span>${line.text}</li>`
              })}</ul>`
        }
      </li>`,
    )}
  </ol>`
}

// ---- editor -----------------------------------------------------------------------------------------------

interface EditableField {
  /** Stable across renames, for the list's keys. */
  key: number
  name: string
  type: FieldType
  nullable: boolean
  enumText: string
  pattern: string
  maxLength: string
  minimum: string
  maximum: string
  description: string
}

interface Draft {
  object: string
  description: string
  id_field: string
  time_field: string
  fields: EditableField[]
}

let nextKey = 1

function toDraft(doc: ObjectSchemaDoc): Draft {
  return {
    object: doc.object,
    description: doc.description ?? '',
    id_field: doc.id_field,
    time_field: doc.time_field ?? '',
    fields: Object.entries(doc.fields).map(([name, spec]) => ({
      key: nextKey++,
      name,
      type: spec.type,
      nullable: spec.nullable ?? false,
      enumText: spec.enum?.join(', ') ?? '',
      pattern: spec.pattern ?? '',
      maxLength: spec.maxLength?.toString() ?? '',
      minimum: spec.minimum?.toString() ?? '',
      maximum: spec.maximum?.toString() ?? '',
      description: spec.description ?? '',
    })),
  }
}

/** The document PUT /schema takes; the server checks it and points at what is wrong. */
function toDoc(draft: Draft): ObjectSchemaDoc {
  const number = (text: string) => (text.trim() === '' ? undefined : Number(text))
  const fields: Record<string, FieldSpec> = {}
  for (const f of draft.fields) {
    const spec: FieldSpec = { type: f.type }
    if (f.nullable) spec.nullable = true
    if (f.enumText.trim())
      spec.enum = f.enumText
        .split(',')
        .map((v) => v.trim())
        .filter(Boolean)
    if (f.pattern.trim()) spec.pattern = f.pattern.trim()
    if (number(f.maxLength) !== undefined) spec.maxLength = number(f.maxLength)
    if (number(f.minimum) !== undefined) spec.minimum = number(f.minimum)
    if (number(f.maximum) !== undefined) spec.maximum = number(f.maximum)
    if (f.description.trim()) spec.description = f.description.trim()
    fields[f.name.trim()] = spec
  }
  return {
    object: draft.object.trim(),
    ...(draft.description.trim() && { description: draft.description.trim() }),
    id_field: draft.id_field,
    ...(draft.time_field && { time_field: draft.time_field }),
    fields,
  }
}

/** Errors by where they point: `/fields/amount/minimum` belongs to the amount row, `/id_field` to its select. */
function errorsAt(errors: FieldError[], pointer: string): FieldError[] {
  return errors.filter((e) => e.pointer === pointer || e.pointer.startsWith(`${pointer}/`))
}

function FieldErrors(props: { errors: FieldError[] }) {
  return props.errors.length > 0 && html`<div class="field-error" role="alert">${props.errors.map((e) => html`<div>${e.message}</div>`)}</div>`
}

function SchemaEditor(props: { initial: ObjectSchemaDoc; creating: boolean; onDone: (saved?: SchemaVersion) => void }) {
  const [draft, setDraft] = useState<Draft>(() => toDraft(props.initial))
  const [error, setError] = useState<ApiError>()
  const [saving, setSaving] = useState(false)
  const errors = error?.errors ?? []
  const placed = new Set<FieldError>()
  const at = (pointer: string) => {
    const found = errorsAt(errors, pointer)
    for (const e of found) placed.add(e)
    return found
  }

  const update = (change: Partial<Draft>) => setDraft((d) => ({ ...d, ...change }))
  const updateField = (key: number, change: Partial<EditableField>) =>
    setDraft((d) => ({ ...d, fields: d.fields.map((f) => (f.key === key ? { ...f, ...change } : f)) }))
  const addField = () =>
    setDraft((d) => ({
      ...d,
      fields: [
        ...d.fields,
        { key: nextKey++, name: '', type: 'string', nullable: true, enumText: '', pattern: '', maxLength: '', minimum: '', maximum: '', description: '' },
      ],
    }))
  const removeField = (key: number) => setDraft((d) => ({ ...d, fields: d.fields.filter((f) => f.key !== key) }))

  const save = async (e: Event) => {
    e.preventDefault()
    setSaving(true)
    setError(undefined)
    const doc = toDoc(draft)
    try {
      const saved = await api<SchemaVersion>('PUT', `/schema/${encodeURIComponent(doc.object)}`, doc)
      props.onDone(saved)
    } catch (err) {
      setError(err instanceof ApiError ? err : new ApiError(0, 'UNKNOWN', (err as Error).message))
      setSaving(false)
    }
  }

  const input = (value: string, onInput: (v: string) => void, attrs: Record<string, unknown> = {}) =>
    html`<input type="text" value=${value} onInput=${(e: Event) => onInput((e.target as HTMLInputElement).value)} ...${attrs} />`
  const fieldNames = draft.fields.map((f) => f.name.trim()).filter(Boolean)

  const rows = draft.fields.map((f) => {
    const rowErrors = at(`/fields/${f.name.trim()}`)
    return html`<tr key=${f.key} class=${rowErrors.length ? 'has-error' : ''} data-field=${f.name}>
      <td>${input(f.name, (v) => updateField(f.key, { name: v }), { placeholder: 'field_name', 'aria-label': 'Field name', class: 'mono field-name' })}</td>
      <td><select value=${f.type} onChange=${(e: Event) => updateField(f.key, { type: (e.target as HTMLSelectElement).value as FieldType })} aria-label="Type">
        ${FIELD_TYPES.map((t) => html`<option value=${t}>${t}</option>`)}</select></td>
      <td class="center"><input type="checkbox" checked=${f.nullable} onChange=${(e: Event) => updateField(f.key, { nullable: (e.target as HTMLInputElement).checked })} aria-label="Optional" /></td>
      <td>${input(f.enumText, (v) => updateField(f.key, { enumText: v }), { 'aria-label': 'Allowed values, comma-separated', class: 'wide-input' })}</td>
      <td>${input(f.pattern, (v) => updateField(f.key, { pattern: v }), { class: 'mono wide-input', 'aria-label': 'Pattern' })}</td>
      <td>${input(f.maxLength, (v) => updateField(f.key, { maxLength: v }), { class: 'narrow', inputmode: 'numeric', 'aria-label': 'Max length' })}</td>
      <td>${input(f.minimum, (v) => updateField(f.key, { minimum: v }), { class: 'narrow', inputmode: 'decimal', 'aria-label': 'Minimum' })}</td>
      <td>${input(f.maximum, (v) => updateField(f.key, { maximum: v }), { class: 'narrow', inputmode: 'decimal', 'aria-label': 'Maximum' })}</td>
      <td>${input(f.description, (v) => updateField(f.key, { description: v }), { 'aria-label': 'Description', class: 'wide-input' })}</td>
      <td><button type="button" class="btn small ghost" onClick=${() => removeField(f.key)} aria-label=${`Remove ${f.name}`} title="Remove the field">✕</button></td>
    </tr>
    ${rowErrors.length > 0 && html`<tr class="error-row"><td colspan="10"><${FieldErrors} errors=${rowErrors} /></td></tr>`}`
  })

  const objectErrors = at('/object')
  const idErrors = at('/id_field')
  const timeErrors = at('/time_field')
  const descriptionErrors = at('/description')
  const fieldsErrors = errors.filter((e) => e.pointer === '/fields')
  for (const e of fieldsErrors) placed.add(e)
  const unplaced = errors.filter((e) => !placed.has(e))

  return html`<form class="schema-editor" onSubmit=${save} data-testid="schema-editor">
    ${
      error &&
      html`<div class="error-box" role="alert"><strong>Not saved</strong>
      <p>${errors.length > 0 && unplaced.length === 0 ? `${errors.length === 1 ? 'One problem is' : `${errors.length} problems are`} marked below.` : error.message}</p>
      ${unplaced.length > 0 && html`<ul>${unplaced.map((e) => html`<li><code>${e.pointer || '/'}</code> ${e.message}</li>`)}</ul>`}</div>`
    }
    <div class="form-grid">
      ${
        props.creating &&
        html`<label>Object name
          ${input(draft.object, (v) => update({ object: v }), { placeholder: 'e.g. chargeback', class: 'mono', required: true, 'data-testid': 'new-object-name' })}
          <span class="hint">lower case letters, digits and _; records are then sent to <code>POST /${draft.object || 'name'}</code></span>
          <${FieldErrors} errors=${objectErrors} />
        </label>`
      }
      <label>Id field
        <select value=${draft.id_field} onChange=${(e: Event) => update({ id_field: (e.target as HTMLSelectElement).value })}>
          ${!fieldNames.includes(draft.id_field) && html`<option value=${draft.id_field}>${draft.id_field || '(choose)'}</option>`}
          ${fieldNames.map((n) => html`<option value=${n}>${n}</option>`)}
        </select>
        <span class="hint">identifies a record; a later record with the same id is a new version of it</span>
        <${FieldErrors} errors=${idErrors} />
      </label>
      <label>Time field
        <select value=${draft.time_field} onChange=${(e: Event) => update({ time_field: (e.target as HTMLSelectElement).value })}>
          <option value="">(none)</option>
          ${draft.fields.filter((f) => f.type === 'timestamp' && f.name.trim()).map((f) => html`<option value=${f.name.trim()}>${f.name.trim()}</option>`)}
        </select>
        <span class="hint">the record's own event time (a timestamp field)</span>
        <${FieldErrors} errors=${timeErrors} />
      </label>
      <label class="wide">Description
        ${input(draft.description, (v) => update({ description: v }))}
        <${FieldErrors} errors=${descriptionErrors} />
      </label>
    </div>
    <${FieldErrors} errors=${fieldsErrors} />
    <div class="table-scroll">
      <table class="data editor-table">
        <thead><tr><th>Field</th><th>Type</th><th>Optional</th><th title="comma-separated; leave empty for any value">Allowed values</th><th title="a regular expression the whole value must match">Pattern</th><th>Max len</th><th>Min</th><th>Max</th><th>Description</th><th></th></tr></thead>
        <tbody>${rows}</tbody>
      </table>
    </div>
    <div class="form-actions">
      <button type="button" class="btn small" onClick=${addField} data-testid="add-field">+ Add field</button>
      <span class="spacer"></span>
      <span class="muted small">Changes apply to records from the new version on; stored records are never rewritten.</span>
      <button type="button" class="btn" onClick=${() => props.onDone()}>Cancel</button>
      <button type="submit" class="btn primary" disabled=${saving} data-testid="save-schema">${saving ? 'Saving…' : props.creating ? 'Create object type' : 'Save new version'}</button>
    </div>
  </form>`
}

const NEW_OBJECT: ObjectSchemaDoc = {
  object: '',
  id_field: 'id',
  time_field: 'created_at',
  fields: { id: { type: 'string', maxLength: 128 }, created_at: { type: 'timestamp' } },
}

function SchemaDetail(props: { object: string; route: Route; onSaved: (message: string) => void }) {
  const { key } = useSigned()
  const { object, route } = props
  const versions = useApi<{ versions: SchemaVersion[] }>(`/schema/${object}/versions`)
  // Versions made elsewhere (update_schema on a record, another admin) appear without a reload.
  useLiveEvent('schema', (change) => change.object === object && versions.reload())
  const [editing, setEditing] = useState(false)
  if (versions.error) return html`<${ErrorBox} error=${versions.error} title=${`The ${object} schema could not be loaded`} onRetry=${versions.reload} />`
  if (!versions.data) return html`<${Loading} />`
  const all = versions.data.versions
  const current = all[all.length - 1]
  const selectedNumber = Number(route.params.get('version') ?? current.version)
  const shown = all.find((v) => v.version === selectedNumber) ?? current
  const done = (saved?: SchemaVersion) => {
    setEditing(false)
    if (!saved) return
    props.onSaved(`Saved ${object} schema version ${saved.version}`)
    versions.reload()
    navigate(['schemas', object])
  }
  return html`<div class="schema-detail">
    <${Card}
      title=${html`${object} <span class="muted">· version ${shown.version}${shown !== current ? ` of ${current.version}` : ''}</span>`}
      actions=${
        !editing &&
        (isAdmin(key)
          ? html`<button class="btn small primary" onClick=${() => setEditing(true)} data-testid="edit-schema">Edit schema</button>`
          : html`<span class="muted small" title="Sign in with an admin key to edit">read only</span>`)
      }>
      ${shown !== current && !editing && html`<p class="notice small">You are looking at an earlier version. <a href=${href(['schemas', object])}>Show the current one</a>.</p>`}
      ${shown.schema.description && !editing && html`<p class="muted">${shown.schema.description}</p>`}
      ${editing ? html`<${SchemaEditor} initial=${current.schema} creating=${false} onDone=${done} />` : html`<${FieldsTable} schema=${shown.schema} />`}
      ${!editing && html`<p class="small muted">Made ${formatTime(shown.created_at)} by ${shown.created_by} (${shown.reason}). Records: <a href=${href(['records', object])}>browse ${object} records</a>.</p>`}
    </${Card}>
    <${Card} title="Version history">
      <${VersionHistory} versions=${all} selected=${shown.version} object=${object} />
    </${Card}>
  </div>`
}

export function SchemasPage(props: { route: Route }) {
  const { route } = props
  const { key, refreshObjects } = useSigned()
  const list = useApi<{ objects: SchemaVersion[] }>('/schema')
  useLiveEvent('schema', () => list.reload())
  const [toast, showToast] = useToast()
  const selected = route.path[1] ?? primaryObject(list.data?.objects.map((v) => v.object) ?? [])
  const creating = selected === 'new'
  const created = (saved?: SchemaVersion) => {
    if (!saved) return navigate(['schemas'])
    showToast(`Created object type ${saved.object}`)
    list.reload()
    refreshObjects()
    navigate(['schemas', saved.object])
  }
  return html`<div class="split">
    <${Card} class="object-list" title="Object types" actions=${isAdmin(key) && html`<a class="btn small" href="#/schemas/new" data-testid="new-object">+ New</a>`}>
      ${list.error && html`<${ErrorBox} error=${list.error} />`}
      ${!list.data && !list.error && html`<${Loading} />`}
      <ul class="nav-list">
        ${list.data?.objects.map(
          (v) => html`<li><a href=${href(['schemas', v.object])} class=${v.object === selected ? 'nav-item active' : 'nav-item'}>
            <span>${v.object}</span><span class="muted small">v${v.version} · ${Object.keys(v.schema.fields).length} fields</span></a></li>`,
        )}
      </ul>
    </${Card}>
    <div>
      ${
        creating
          ? html`<${Card} title="New object type">
              <p class="muted">A new object type gets its own stream subject, table and schema history. Start from these fields and change them as needed.</p>
              <${SchemaEditor} initial=${NEW_OBJECT} creating=${true} onDone=${created} />
            </${Card}>`
          : selected &&
            html`<${SchemaDetail} key=${selected} object=${selected} route=${route} onSaved=${(m: string) => {
              showToast(m)
              list.reload()
            }} />`
      }
    </div>
    ${toast}
  </div>`
}
