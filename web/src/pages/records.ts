import { html } from 'htm/preact'
import { useEffect, useState } from 'preact/hooks'
import { type ApiError, api } from '../api.ts'
import { exampleCommand } from '../examples.ts'
import { live, useLiveEvent } from '../live.ts'
import { href, navigate, type Route } from '../router.ts'
import { primaryObject, useSigned } from '../session.ts'
import type { Alert, FieldSpec, ObjectSchemaDoc, RecordPage, RecordView, SchemaVersion, StoredDecision } from '../types.ts'
import {
  Badge,
  Card,
  CodeBlock,
  DECISION_TONE,
  Empty,
  ErrorBox,
  formatDuration,
  formatTime,
  Loading,
  SEVERITY_TONE,
  timeAgo,
  useApi,
  useCursorPages,
  useNow,
} from '../ui.ts'

const PAGE_SIZE = 50
/** Rows kept on screen: the page plus what arrived live since. */
const MAX_ROWS = 500
/**
 * The rule stage decides a moment after a record is stored: for a record received this recently the panel asks
 * the server to wait for the decision (`?wait_ms=`) rather than show "no decision yet" for a few hundred ms.
 */
const FRESH_RECORD_MS = 60_000
const DECISION_WAIT_MS = 5000

/** A stored record, or one the live feed forwarded before the sink stored it (no sequence or store time yet). */
interface Row extends Omit<RecordView, 'seq' | 'stored_at'>, Partial<Pick<RecordView, 'seq' | 'stored_at'>> {
  /** Set on rows that arrived through the live feed, for the highlight. */
  arrived?: number
}

/** Filters live in the page's address (`?f.country=DE`), so a filtered view can be bookmarked and shared. */
function filtersOf(params: URLSearchParams): [string, string][] {
  return [...params.entries()].filter(([k]) => k.startsWith('f.')).map(([k, v]) => [k.slice(2), v])
}

function paramsWith(route: Route, change: Record<string, string | undefined>): Record<string, string | undefined> {
  return { ...Object.fromEntries(route.params.entries()), ...change }
}

/** Column order: the record's id, its time, then the other fields as the schema lists them. */
function columnsOf(schema: ObjectSchemaDoc): string[] {
  const rest = Object.keys(schema.fields).filter((f) => f !== schema.id_field && f !== schema.time_field)
  return [schema.id_field, ...(schema.time_field ? [schema.time_field] : []), ...rest]
}

function matches(data: Record<string, unknown>, recordId: string, filters: [string, string][]): boolean {
  return filters.every(([field, value]) => (field === 'record_id' ? recordId === value : String(data[field] ?? '') === value))
}

function Cell(props: { value: unknown; spec?: FieldSpec }) {
  const { value, spec } = props
  if (value === null || value === undefined) return html`<span class="muted">—</span>`
  if (spec?.type === 'timestamp' && typeof value === 'string') return html`<span title=${value}>${formatTime(value)}</span>`
  if (typeof value === 'boolean') return value ? 'yes' : 'no'
  if (typeof value === 'object') {
    const text = JSON.stringify(value)
    return html`<code title=${text}>${text.length > 40 ? `${text.slice(0, 40)}…` : text}</code>`
  }
  const text = String(value)
  return text.length > 48 ? html`<span title=${text}>${text.slice(0, 48)}…</span>` : text
}

/** The rule stage's decision on a record (`GET /decisions/:record_id`): loading, none yet, failed, or decided. */
function RecordDecision(props: { recordId: string; receivedAt: string }) {
  const { recordId, receivedAt } = props
  const { routes } = useSigned()
  const available = routes.has('GET /decisions/{record_id}')
  const [state, setState] = useState<{ decision?: StoredDecision; none?: boolean; error?: ApiError }>({})
  const [generation, setGeneration] = useState(0)
  useEffect(() => {
    if (!available) return
    let active = true
    setState({})
    const wait = Date.now() - Date.parse(receivedAt) < FRESH_RECORD_MS ? `?wait_ms=${DECISION_WAIT_MS}` : ''
    api<StoredDecision>('GET', `/decisions/${encodeURIComponent(recordId)}${wait}`).then(
      (decision) => active && setState({ decision }),
      (error: ApiError) => active && setState(error.code === 'SLUICE_DECISION_NOT_FOUND' ? { none: true } : { error }),
    )
    return () => {
      active = false
    }
  }, [available, recordId, receivedAt, generation])
  const again = () => setGeneration((g) => g + 1)
  if (!available) return html`<p class="muted">Decisions are not available in this build.</p>`
  const { decision: d, none, error } = state
  if (error) return html`<${ErrorBox} error=${error} title="The decision could not be loaded" onRetry=${again} />`
  if (none)
    return html`<p class="muted" data-testid="decision-none">No decision yet: the rule stage decides a moment after a record is stored, while a
      process with the rules role runs. <button class="btn small ghost" onClick=${again}>Check again</button></p>`
  if (!d) return html`<${Loading} label="Waiting for the rule stage…" />`
  const ruleLinks = (ids: string[]) => ids.map((id, i) => html`${i > 0 && ', '}<a href=${href(['alerts'], { rule: id })}>${id}</a>`)
  return html`<div data-testid="record-decision">
    <p class="decision-line"><${Badge} tone=${DECISION_TONE[d.decision]}>${d.decision}</${Badge}>
      <span class="muted">score ${d.score} · rule set v${d.rule_set_version}${d.evaluate_rules ? '' : ' · backfill: no alerts raised'}</span></p>
    <dl class="kv">
      <dt>Rules hit</dt><dd>${d.fired.length > 0 ? ruleLinks(d.fired) : html`<span class="muted">none</span>`}</dd>
      ${d.shadow_hits.length > 0 && html`<dt>Shadow hits</dt><dd>${ruleLinks(d.shadow_hits)}</dd>`}
      ${d.stopped_by && html`<dt>Stopped by</dt><dd>${d.stopped_by}</dd>`}
      <dt>Evaluated</dt><dd title=${d.evaluated_at}>${formatTime(d.evaluated_at)} <span class="muted">· ${formatDuration(d.latency_ms)} after receipt</span></dd>
    </dl>
  </div>`
}

function RecordAlerts(props: { object: string; recordId: string }) {
  const { routes } = useSigned()
  const stored = useApi<{ alerts: Alert[] }>(
    routes.has('GET /alerts') ? `/alerts?object=${encodeURIComponent(props.object)}&record_id=${encodeURIComponent(props.recordId)}&limit=1000` : null,
  )
  if (!routes.has('GET /alerts')) return html`<p class="muted">Rule outcomes are not available in this build.</p>`
  // Live alerts cover hits the analytics store has not taken in yet.
  const seen = new Map<string, Alert>()
  for (const a of [...live.recentAlerts, ...(stored.data?.alerts ?? [])]) if (a.record_id === props.recordId) seen.set(a.rule_id, a)
  const alerts = [...seen.values()]
  if (stored.loading && alerts.length === 0) return html`<${Loading} />`
  if (stored.error && alerts.length === 0) return html`<${ErrorBox} error=${stored.error} title="Alerts could not be loaded" />`
  if (alerts.length === 0) return html`<p class="muted">No alert on this record.</p>`
  return html`<div data-testid="record-alerts">
    <ul class="alert-list">${alerts.map(
      (a) => html`<li><${Badge} tone=${SEVERITY_TONE[a.severity]}>${a.severity}</${Badge}>
        <a href=${href(['alerts'], { rule: a.rule_id })}>${a.rule_name ?? a.rule_id}</a> <span class="muted">+${a.score}</span></li>`,
    )}</ul>
  </div>`
}

/** The side panel of one record: its envelope, its fields, and what the rules made of it. */
function RecordDetail(props: { object: string; recordId: string; schema: ObjectSchemaDoc; rows: Row[]; onClose: () => void }) {
  const { object, recordId } = props
  const [stored, setStored] = useState<RecordView | null>()
  const [error, setError] = useState<ApiError>()
  const shown = props.rows.find((r) => r.record_id === recordId)
  // A record that just arrived may not be stored yet: ask again until the sink has it, for its seq and stored time.
  useEffect(() => {
    let active = true
    let tries = 0
    setStored(undefined)
    setError(undefined)
    const load = () =>
      api<RecordPage>('GET', `/records/${object}?view=history&limit=1&record_id=${encodeURIComponent(recordId)}`).then(
        (page) => {
          if (!active) return
          setStored(page.records[0] ?? null)
          if (!page.records[0] && ++tries < 10) setTimeout(load, 300)
        },
        (err: ApiError) => active && setError(err),
      )
    load()
    return () => {
      active = false
    }
  }, [object, recordId])
  const record = stored ?? shown
  const copy = () => record && navigator.clipboard?.writeText(JSON.stringify(record.data, null, 2))
  return html`<aside class="drawer" data-testid="record-detail">
    <header class="drawer-head">
      <div><div class="muted small">${object}</div><h2><code>${String(record?.data[props.schema.id_field] ?? recordId)}</code></h2></div>
      <button class="btn small ghost" onClick=${props.onClose} aria-label="Close">✕</button>
    </header>
    ${error && html`<${ErrorBox} error=${error} />`}
    ${
      !record
        ? stored === null
          ? html`<p class="muted">No stored record has id ${recordId}.</p>`
          : html`<${Loading} />`
        : html`
      <h3 class="sub-head">Envelope</h3>
      <dl class="kv">
        <dt>Record id</dt><dd><code>${record.record_id}</code></dd>
        <dt>Source</dt><dd>${record.source}</dd>
        <dt>Batch job</dt><dd>${record.job_id ? html`<a href=${href(['jobs'], { job: record.job_id })}><code>${record.job_id}</code></a>` : html`<span class="muted">none</span>`}</dd>
        <dt>Schema version</dt><dd><a href=${href(['schemas', object], { version: String(record.schema_version) })}>v${record.schema_version}</a></dd>
        <dt>Received</dt><dd title=${record.received_at}>${formatTime(record.received_at)}</dd>
        <dt>Stored</dt><dd>${stored ? html`<span title=${stored.stored_at}>${formatTime(stored.stored_at)}</span>` : html`<span class="muted">not yet queryable</span>`}</dd>
        <dt>Stream seq</dt><dd>${stored?.seq ?? html`<span class="muted">—</span>`}</dd>
      </dl>
      <h3 class="sub-head">Decision</h3>
      <${RecordDecision} recordId=${recordId} receivedAt=${record.received_at} />
      <h3 class="sub-head">Alerts</h3>
      <${RecordAlerts} object=${object} recordId=${recordId} />
      <h3 class="sub-head">Fields <button class="btn small ghost" onClick=${copy}>Copy JSON</button></h3>
      <dl class="kv">
        ${columnsOf(props.schema)
          .concat(Object.keys(record.data).filter((k) => !(k in props.schema.fields)))
          .map((f) => {
            const value = record.data[f]
            return html`<dt>${f}</dt><dd>${value === null || value === undefined ? html`<span class="muted">null</span>` : typeof value === 'object' ? html`<pre>${JSON.stringify(value, null, 2)}</pre>` : String(value)}</dd>`
          })}
      </dl>`
    }
  </aside>`
}

function FilterBar(props: { route: Route; columns: string[]; filters: [string, string][] }) {
  const [field, setField] = useState(props.columns[0] ?? 'record_id')
  const [value, setValue] = useState('')
  const { route } = props
  const add = (e: Event) => {
    e.preventDefault()
    if (!value.trim()) return
    navigate(route.path, paramsWith(route, { [`f.${field}`]: value.trim(), record: undefined }))
    setValue('')
  }
  const remove = (f: string) => navigate(route.path, paramsWith(route, { [`f.${f}`]: undefined }))
  return html`<form class="filter-bar" onSubmit=${add}>
    <select value=${field} onChange=${(e: Event) => setField((e.target as HTMLSelectElement).value)} aria-label="Field">
      ${['record_id', ...props.columns].map((c) => html`<option value=${c}>${c}</option>`)}
    </select>
    <span class="muted">=</span>
    <input type="text" placeholder="value" value=${value} onInput=${(e: Event) => setValue((e.target as HTMLInputElement).value)} aria-label="Value" data-testid="filter-value" />
    <button class="btn small" type="submit">Add filter</button>
    ${props.filters.map(
      ([f, v]) =>
        html`<span class="chip">${f} = <b>${v}</b><button type="button" onClick=${() => remove(f)} aria-label=${`Remove filter ${f}`}>✕</button></span>`,
    )}
  </form>`
}

export function RecordsPage(props: { route: Route }) {
  const { route } = props
  const { objects } = useSigned()
  const object = route.path[1] ?? primaryObject(objects)
  const view = route.params.get('view') === 'history' ? 'history' : 'current'
  const filters = filtersOf(route.params)
  const selected = route.params.get('record') ?? undefined
  const now = useNow(5000)
  const schema = useApi<SchemaVersion>(object ? `/schema/${object}` : null)
  // A new version (an added field, say) shows as a new column at once.
  useLiveEvent('schema', (change) => change.object === object && schema.reload())
  const query = `/records/${object}?limit=${PAGE_SIZE}&view=${view}${filters.map(([f, v]) => `&${encodeURIComponent(f)}=${encodeURIComponent(v)}`).join('')}`
  const { rows, setRows, cursor, status, loadOlder } = useCursorPages<Row, RecordPage>(query, (page) => page.records)
  const [paused, setPaused] = useState(false)
  const [held, setHeld] = useState<Row[]>([])
  // Rows held while paused belong to the list being replaced.
  useEffect(() => setHeld([]), [query])

  const idField = schema.data?.schema.id_field
  const addLive = (incoming: Row[]) =>
    setRows((current) => {
      const ids = new Set(incoming.map((r) => r.record_id))
      // In the current view a newer version of a record replaces the row of the same id.
      const keys = view === 'current' && idField ? new Set(incoming.map((r) => String(r.data[idField]))) : undefined
      const kept = current.filter((r) => !ids.has(r.record_id) && !(keys && idField && keys.has(String(r.data[idField]))))
      return [...incoming, ...kept].slice(0, MAX_ROWS)
    })

  useLiveEvent('record', ({ record }) => {
    if (record.object !== object || !matches(record.data, record.record_id, filters)) return
    const row: Row = { ...record, arrived: Date.now() }
    if (paused) setHeld((h) => [row, ...h].slice(0, MAX_ROWS))
    else addLive([row])
  })

  const resume = () => {
    addLive(held)
    setHeld([])
    setPaused(false)
  }

  if (!object) return html`<${Empty} title="No object types on file">Create one on the Schemas page.</${Empty}>`
  const doc = schema.data?.schema
  const columns = doc ? columnsOf(doc) : []
  const select = (recordId: string | undefined) => navigate(route.path, paramsWith(route, { record: recordId }))

  return html`<div class=${`records-page ${selected ? 'with-drawer' : ''}`}>
    <nav class="tabs">
      ${objects.map((o) => html`<a href=${href(['records', o], { view: view === 'history' ? 'history' : undefined })} class=${o === object ? 'tab active' : 'tab'}>${o}</a>`)}
    </nav>
    <${Card} testid="records-card">
      <div class="toolbar">
        <div class="segmented" role="group" aria-label="View">
          <a href=${href(['records', object], paramsWith(route, { view: undefined, record: undefined }))} class=${view === 'current' ? 'seg active' : 'seg'}
            title="The latest version of each record">Current</a>
          <a href=${href(['records', object], paramsWith(route, { view: 'history', record: undefined }))} class=${view === 'history' ? 'seg active' : 'seg'}
            title="Every version ever stored">History</a>
        </div>
        ${doc && html`<${FilterBar} route=${route} columns=${columns} filters=${filters} />`}
        <div class="toolbar-right">
          ${
            paused
              ? html`<button class="btn small primary" onClick=${resume} data-testid="resume-live">▶ Resume${held.length ? ` (${held.length} new)` : ''}</button>`
              : html`<button class="btn small" onClick=${() => setPaused(true)} title="Stop adding arriving records to the table">❚❚ Pause live</button>`
          }
        </div>
      </div>
      ${status.error && html`<${ErrorBox} error=${status.error} title="Records could not be loaded" />`}
      ${schema.error && html`<${ErrorBox} error=${schema.error} title="The schema could not be loaded" />`}
      ${
        rows.length === 0
          ? status.loading || !doc
            ? html`<${Loading} />`
            : filters.length > 0
              ? html`<${Empty} title="No records match these filters">
                  <p>Filters compare whole values. <a href=${href(['records', object], { view: view === 'history' ? 'history' : undefined })}>Clear the filters</a>.</p>
                </${Empty}>`
              : html`<${Empty} title=${`No ${object} records yet`} testid="records-empty">
                  <p>New ${object} records appear here the moment they arrive. Send one with an ingest or admin key:</p>
                  <${CodeBlock} text=${exampleCommand(doc)} />
                  <p class="muted small">Or stream sample data: <code>npx sluice demo --key $KEY --rate 20</code>. Many at once: the Batch jobs page.</p>
                </${Empty}>`
          : html`<div class="table-scroll">
            <table class="data records" data-testid="records-table">
              <thead><tr><th>Received</th>${columns.map((c) => html`<th class=${doc?.fields[c]?.type === 'number' || doc?.fields[c]?.type === 'integer' ? 'num' : ''}>${c}</th>`)}<th>Source</th></tr></thead>
              <tbody>
                ${rows.map(
                  (
                    r,
                  ) => html`<tr key=${r.record_id} class=${`${r.arrived && now - r.arrived < 3000 ? 'flash' : ''} ${r.record_id === selected ? 'selected' : ''}`}
                    onClick=${() => select(r.record_id)} data-record-id=${r.record_id}>
                    <td class="nowrap" title=${r.received_at}>${timeAgo(r.received_at, now)}</td>
                    ${columns.map((c) => html`<td class=${doc?.fields[c]?.type === 'number' || doc?.fields[c]?.type === 'integer' ? 'num' : ''}><${Cell} value=${r.data[c]} spec=${doc?.fields[c]} /></td>`)}
                    <td>${r.source}</td>
                  </tr>`,
                )}
              </tbody>
            </table>
          </div>
          <div class="table-foot">
            <span class="muted small">${rows.length} shown, newest first${paused ? ' · live updates paused' : ' · live'}</span>
            ${cursor && html`<button class="btn small" onClick=${loadOlder} disabled=${status.loading}>${status.loading ? 'Loading…' : 'Load older'}</button>`}
          </div>`
      }
    </${Card}>
    ${selected && doc && html`<${RecordDetail} object=${object} recordId=${selected} schema=${doc} rows=${rows} onClose=${() => select(undefined)} />`}
  </div>`
}
