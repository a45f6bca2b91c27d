import { html } from 'htm/preact'
import { useEffect, useRef, useState } from 'preact/hooks'
import { ApiError, api, type FieldError } from '../api.ts'
import { href, navigate, type Route } from '../router.ts'
import { isAdmin, primaryObject, useSigned } from '../session.ts'
import type { RuleCounters, RuleDefinition, RuleSet, RuleStats, StoredRule, TestDecision } from '../types.ts'
import {
  Badge,
  Card,
  CodeBlock,
  DECISION_TONE,
  Empty,
  ErrorBox,
  formatNumber,
  Loading,
  NeedsAdmin,
  NotAvailable,
  SEVERITY_TONE,
  type Tone,
  useApi,
  useToast,
} from '../ui.ts'

const SEVERITIES = ['low', 'medium', 'high', 'critical'] as const
const PERIODS = [
  { minutes: 60, label: 'last hour' },
  { minutes: 1440, label: 'last 24 h' },
  { minutes: 10_080, label: 'last 7 days' },
]

/** A stored rule as PUT /rules takes it back: the definition without the version bookkeeping. */
function definitionOf(rule: StoredRule): RuleDefinition {
  const { version: _version, updated_at: _at, updated_by: _by, ...definition } = rule
  return definition
}

/** Where a compile error is: the server says `line 2, column 14: ...` (docs/rules.md). */
function expressionProblem(error: FieldError): { line: number; column: number; message: string } | undefined {
  const m = /^line (\d+), column (\d+): ([\s\S]*)$/.exec(error.message)
  return m ? { line: Number(m[1]), column: Number(m[2]), message: m[3] } : undefined
}

/** The expression with a caret under the error, the way a compiler prints it. */
function ExpressionError(props: { expression: string; error: FieldError }) {
  const at = expressionProblem(props.error)
  if (!at) return html`<div class="field-error" role="alert">${props.error.message}</div>`
  const line = props.expression.split('\n')[at.line - 1] ?? ''
  const gutter = `${String(at.line).padStart(3)} │ `
  // Newlines as values: htm folds the template's own line breaks into spaces.
  return html`<div class="expr-error" role="alert" data-testid="expression-error">
    <div class="field-error">Line ${at.line}, column ${at.column}: ${at.message}</div>
    <pre><span class="muted">${gutter}</span>${line.slice(0, at.column - 1)}<mark>${line.slice(at.column - 1, at.column) || ' '}</mark>${line.slice(at.column)}${'\n'}<span
      class="muted">${' '.repeat(gutter.length - 2)}│ </span>${' '.repeat(Math.max(0, at.column - 1))}<b>^</b></pre>
  </div>`
}

function RuleEditor(props: {
  rule: RuleDefinition
  creating: boolean
  objects: string[]
  save: (rule: RuleDefinition) => Promise<FieldError[] | undefined>
  /** The rule set document with this rule as edited, for POST /rules/test; undefined without that route. */
  testDoc?: (rule: RuleDefinition) => unknown
  remove?: () => void
  onClose: () => void
}) {
  const [rule, setRule] = useState<RuleDefinition>(props.rule)
  const [featuresText, setFeaturesText] = useState(JSON.stringify(props.rule.features, null, 2))
  const [errors, setErrors] = useState<FieldError[]>([])
  const [featuresError, setFeaturesError] = useState<string>()
  const [saving, setSaving] = useState(false)
  const expression = useRef<HTMLTextAreaElement>(null)
  const set = (change: Partial<RuleDefinition>) => setRule((r) => ({ ...r, ...change }))
  // Errors about this rule point into it (`/when`); others keep their place in the whole set (`/rules/3/id`).
  const at = (field: string) => errors.filter((e) => e.pointer === `/${field}` || e.pointer.startsWith(`/${field}/`))
  const whenErrors = at('when')

  // Put the cursor where the expression failed to compile.
  useEffect(() => {
    const problem = whenErrors[0] && expressionProblem(whenErrors[0])
    const el = expression.current
    if (!problem || !el) return
    const lines = rule.when.split('\n')
    const offset = lines.slice(0, problem.line - 1).reduce((n, l) => n + l.length + 1, 0) + problem.column - 1
    el.focus()
    el.setSelectionRange(offset, offset + 1)
  }, [errors])

  const submit = async (e: Event) => {
    e.preventDefault()
    let features: Record<string, unknown>
    try {
      features = JSON.parse(featuresText || '{}')
      setFeaturesError(undefined)
    } catch (err) {
      setFeaturesError(`not JSON: ${(err as Error).message}`)
      return
    }
    setSaving(true)
    const problems = await props.save({ ...rule, features })
    setSaving(false)
    setErrors(problems ?? [])
    if (!problems) props.onClose()
  }

  const text = (field: 'id' | 'name' | 'description', attrs: Record<string, unknown> = {}) =>
    html`<input type="text" value=${rule[field] ?? ''} onInput=${(e: Event) => set({ [field]: (e.target as HTMLInputElement).value })} ...${attrs} />`
  const number = (field: 'order' | 'score') =>
    html`<input type="number" step="any" value=${rule[field]} onInput=${(e: Event) => set({ [field]: Number((e.target as HTMLInputElement).value) })} />`
  const errorsOf = (field: string) => at(field).map((e) => html`<div class="field-error">${e.message}</div>`)
  const shown = new Set(['id', 'name', 'description', 'object', 'order', 'when', 'score', 'severity', 'tags', 'features'])
  const other = errors.filter((e) => !shown.has(e.pointer.split('/')[1] ?? ''))

  return html`<aside class="drawer wide" data-testid="rule-editor">
    <header class="drawer-head">
      <div><div class="muted small">${props.creating ? 'new rule' : rule.id}</div><h2>${rule.name || 'New rule'}</h2></div>
      <button class="btn small ghost" onClick=${props.onClose} aria-label="Close">✕</button>
    </header>
    <form onSubmit=${submit} class="rule-form">
      ${other.length > 0 && html`<div class="error-box" role="alert"><strong>Not saved</strong><ul>${other.map((e) => html`<li><code>${e.pointer}</code> ${e.message}</li>`)}</ul></div>`}
      <div class="form-grid">
        ${props.creating && html`<label>Id ${text('id', { class: 'mono', placeholder: 'large-amount', required: true })}<span class="hint">lower case, digits, - and _; part of the alert subject</span>${errorsOf('id')}</label>`}
        <label class="wide">Name ${text('name', { required: true })}${errorsOf('name')}</label>
        <label>Object <select value=${rule.object} onChange=${(e: Event) => set({ object: (e.target as HTMLSelectElement).value })}>
          ${props.objects.map((o) => html`<option value=${o}>${o}</option>`)}</select>${errorsOf('object')}</label>
        <label>Order ${number('order')}<span class="hint">rules run in this order</span>${errorsOf('order')}</label>
        <label>Score ${number('score')}${errorsOf('score')}</label>
        <label>Severity <select value=${rule.severity} onChange=${(e: Event) => set({ severity: (e.target as HTMLSelectElement).value as RuleDefinition['severity'] })}>
          ${SEVERITIES.map((s) => html`<option value=${s}>${s}</option>`)}</select></label>
        <label>Mode <select value=${rule.mode} onChange=${(e: Event) => set({ mode: (e.target as HTMLSelectElement).value as RuleDefinition['mode'] })}>
          <option value="live">live: adds score, raises alerts</option><option value="shadow">shadow: only recorded</option></select></label>
        <label class="check"><input type="checkbox" checked=${rule.enabled} onChange=${(e: Event) => set({ enabled: (e.target as HTMLInputElement).checked })} /> enabled</label>
        <label class="check" title="A match ends evaluation of the record: for allow-lists"><input type="checkbox" checked=${rule.stop}
          onChange=${(e: Event) => set({ stop: (e.target as HTMLInputElement).checked })} /> stop on match</label>
        <label class="wide">Tags <input type="text" value=${rule.tags.join(', ')} placeholder="amount, velocity"
          onInput=${(e: Event) =>
            set({
              tags: (e.target as HTMLInputElement).value
                .split(',')
                .map((t) => t.trim())
                .filter(Boolean),
            })} />${errorsOf('tags')}</label>
        <label class="wide">Description ${text('description')}</label>
      </div>
      <label class="block">When <span class="hint">a CEL expression over <code>record</code>, <code>account</code>, <code>activity</code> and <code>features</code>; the rule matches when it is true</span>
        <textarea ref=${expression} class=${`mono expression ${whenErrors.length ? 'invalid' : ''}`} rows="4" spellcheck="false" data-testid="rule-when"
          value=${rule.when} onInput=${(e: Event) => set({ when: (e.target as HTMLTextAreaElement).value })}></textarea>
      </label>
      ${whenErrors.map((e) => html`<${ExpressionError} expression=${rule.when} error=${e} />`)}
      <label class="block">Velocity features <span class="hint">JSON: name → {aggregate, field, window, group_by}; read as <code>features.name</code></span>
        <textarea class="mono" rows="4" spellcheck="false" value=${featuresText} onInput=${(e: Event) => setFeaturesText((e.target as HTMLTextAreaElement).value)}></textarea>
      </label>
      ${featuresError && html`<div class="field-error">${featuresError}</div>`}${errorsOf('features')}
      <div class="form-actions">
        ${props.remove && html`<button type="button" class="btn danger" onClick=${props.remove}>Delete rule</button>`}
        <span class="spacer"></span>
        <button type="button" class="btn" onClick=${props.onClose}>Cancel</button>
        <button type="submit" class="btn primary" disabled=${saving} data-testid="save-rule">${saving ? 'Saving…' : 'Save'}</button>
      </div>
    </form>
    <h3 class="sub-head">Test against a record</h3>
    ${
      props.testDoc
        ? html`<${RuleTest} rule=${rule} doc=${() => props.testDoc?.({ ...rule, features: featuresOrSaved(featuresText, rule.features) })} />`
        : html`<${NotAvailable} feature="Testing a rule in the page">
            <p>Test rules from a file against a record with the CLI:</p>
            <${CodeBlock} text="npx sluice rules test rules.json --record '{&quot;transaction_id&quot;: &quot;tx-1&quot;, ...}'" />
          </${NotAvailable}>`
    }
  </aside>`
}

/** The features being typed when they are JSON, else the ones the rule had. */
function featuresOrSaved(text: string, saved: RuleDefinition['features']): RuleDefinition['features'] {
  try {
    return JSON.parse(text)
  } catch {
    return saved
  }
}

const OUTCOME_TONE: Record<string, Tone> = { hit: 'warn', shadow_hit: 'info', miss: 'muted', error: 'bad' }

/** Runs the whole rule set, with this rule as edited and not yet saved, on a record typed in (POST /rules/test). */
function RuleTest(props: { rule: RuleDefinition; doc: () => unknown }) {
  const [recordText, setRecordText] = useState('{\n  \n}')
  const [result, setResult] = useState<TestDecision>()
  const [error, setError] = useState<ApiError | Error>()
  const [running, setRunning] = useState(false)
  const run = async () => {
    setError(undefined)
    setResult(undefined)
    let record: unknown
    try {
      record = JSON.parse(recordText)
    } catch (err) {
      return setError(new Error(`The record is not JSON: ${(err as Error).message}`))
    }
    setRunning(true)
    try {
      setResult(await api<TestDecision>('POST', '/rules/test', { rules: props.doc(), record, object: props.rule.object }))
    } catch (err) {
      setError(err as Error)
    } finally {
      setRunning(false)
    }
  }
  const failures = new Map(result?.errors.map((e) => [e.rule_id, e.message]))
  return html`<div class="stack" data-testid="rule-test">
    <label class="block">Record <span class="hint">JSON, a <code>${props.rule.object}</code> as it would be posted; evaluated with no earlier records</span>
      <textarea class="mono" rows="6" spellcheck="false" data-testid="rule-test-record" value=${recordText}
        onInput=${(e: Event) => setRecordText((e.target as HTMLTextAreaElement).value)}></textarea>
    </label>
    <div class="form-actions"><span class="spacer"></span>
      <button type="button" class="btn" disabled=${running} onClick=${run} data-testid="rule-test-run">${running ? 'Testing…' : 'Test'}</button></div>
    ${error && html`<${ErrorBox} error=${error} title="The test did not run" />`}
    ${
      result &&
      html`<div data-testid="rule-test-result">
        <p>Decision <${Badge} tone=${DECISION_TONE[result.decision]}>${result.decision}</${Badge}> <span class="muted">· score ${result.score}</span></p>
        <table class="data"><thead><tr><th>Rule</th><th>Outcome</th><th></th></tr></thead><tbody>${result.evaluations.map(
          (e) => html`<tr class=${e.rule_id === props.rule.id ? 'selected' : ''}><td><code>${e.rule_id}</code></td>
            <td><${Badge} tone=${OUTCOME_TONE[e.outcome]}>${e.outcome.replace('_', ' ')}</${Badge}></td>
            <td class="muted">${failures.get(e.rule_id) ?? ''}</td></tr>`,
        )}</tbody></table>
      </div>`
    }
  </div>`
}

function Counter(props: { value: number | undefined; tone?: 'bad' }) {
  if (props.value === undefined) return html`<span class="muted">—</span>`
  return html`<span class=${props.tone && props.value > 0 ? 'text-bad' : ''}>${formatNumber(props.value)}</span>`
}

function RuleTable(props: {
  object: string
  rules: StoredRule[]
  counters: Map<string, RuleCounters>
  thresholds?: { review: number; block: number }
  toggle: (rule: StoredRule, change: Partial<RuleDefinition>) => void
}) {
  return html`<${Card} title=${html`${props.object} <span class="muted small">· ${props.rules.length} rules · decision: review at ${props.thresholds?.review ?? 50}, block at ${props.thresholds?.block ?? 100}</span>`}>
    <div class="table-scroll">
    <table class="data rules" data-testid=${`rules-${props.object}`}>
      <thead><tr><th class="num">#</th><th>Rule</th><th>Mode</th><th>Enabled</th><th class="num">Score</th><th>Severity</th>
        <th class="num">Hits</th><th class="num">Shadow</th><th class="num">Errors</th><th class="num">Evaluated</th><th class="num">Latency</th></tr></thead>
      <tbody>
        ${props.rules.map((r) => {
          const c = props.counters.get(r.id)
          return html`<tr key=${r.id} class=${`clickable ${r.enabled ? '' : 'disabled'}`} onClick=${() => navigate(['rules'], { edit: r.id })} data-rule-id=${r.id}>
            <td class="num muted">${r.order}</td>
            <td><b>${r.name}</b>${r.stop && html` <${Badge} tone="info" title="a match ends evaluation">stop</${Badge}>`}
              <div class="muted small"><code>${r.id}</code> v${r.version}${r.tags.length ? ` · ${r.tags.join(', ')}` : ''}</div></td>
            <td onClick=${(e: Event) => e.stopPropagation()}>
              <button class=${`btn small toggle ${r.mode}`} title="Switch between live and shadow" onClick=${() => props.toggle(r, { mode: r.mode === 'live' ? 'shadow' : 'live' })}>${r.mode}</button></td>
            <td onClick=${(e: Event) => e.stopPropagation()}>
              <label class="switch" title=${r.enabled ? 'Disable' : 'Enable'}><input type="checkbox" checked=${r.enabled} onChange=${() => props.toggle(r, { enabled: !r.enabled })}
                aria-label=${`${r.id} enabled`} /><span></span></label></td>
            <td class="num">${r.score}</td>
            <td><${Badge} tone=${SEVERITY_TONE[r.severity]}>${r.severity}</${Badge}></td>
            <td class="num"><${Counter} value=${c?.hits} /></td>
            <td class="num"><${Counter} value=${c?.shadow_hits} /></td>
            <td class="num"><${Counter} value=${c?.errors} tone="bad" /></td>
            <td class="num"><${Counter} value=${c?.evaluations} /></td>
            <td class="num nowrap">${c?.mean_micros == null ? html`<span class="muted">—</span>` : html`<span title=${`max ${Math.round(c.max_micros ?? 0)} µs`}>${Math.round(c.mean_micros)} µs</span>`}</td>
          </tr>`
        })}
      </tbody>
    </table>
    </div>
  </${Card}>`
}

function newRule(objects: string[], rules: StoredRule[]): RuleDefinition {
  const object = primaryObject(objects) ?? ''
  const last = Math.max(0, ...rules.filter((r) => r.object === object).map((r) => r.order))
  return {
    id: '',
    name: '',
    object,
    order: last + 10,
    when: 'record.amount > 1000.0',
    score: 10,
    severity: 'medium',
    tags: [],
    stop: false,
    mode: 'shadow',
    enabled: true,
    features: {},
  }
}

export function RulesPage(props: { route: Route }) {
  const { routes, key, objects } = useSigned()
  const [period, setPeriod] = useState(60)
  const [toast, showToast] = useToast()
  const [actionError, setActionError] = useState<ApiError>()
  const admin = isAdmin(key)
  const ruleSet = useApi<RuleSet>(routes.has('GET /rules') && admin ? '/rules' : null)
  const stats = useApi<RuleStats>(routes.has('GET /rules/stats') ? `/rules/stats?since_minutes=${period}` : null, 10_000)

  if (!routes.has('GET /rules'))
    return html`<${NotAvailable} feature="The rule stage">
      <p>Rules, their hit counters and the expression editor appear here once this server has the rules API (<code>GET /rules</code>).</p>
    </${NotAvailable}>`

  const counters = new Map((stats.data?.rules ?? []).map((c) => [c.rule_id, c]))
  const editing = props.route.params.get('edit') ?? undefined

  /** PUT the whole set with `rules`; field errors come back for the editor to place, other errors go on top. */
  const put = async (rules: RuleDefinition[], message: (version: number, changes: number) => string): Promise<FieldError[] | undefined> => {
    if (!ruleSet.data) return
    setActionError(undefined)
    try {
      const saved = await api<RuleSet & { changes: unknown[] }>('PUT', '/rules', { thresholds: ruleSet.data.thresholds, rules })
      showToast(message(saved.version, saved.changes.length))
      ruleSet.reload()
      return undefined
    } catch (err) {
      const error = err instanceof ApiError ? err : new ApiError(0, 'UNKNOWN', (err as Error).message)
      if (error.errors.length === 0) setActionError(error)
      return error.errors.length > 0 ? error.errors : [{ pointer: '', message: error.message }]
    }
  }
  const definitions = () => (ruleSet.data?.rules ?? []).map(definitionOf)
  const toggle = async (rule: StoredRule, change: Partial<RuleDefinition>) => {
    const problems = await put(
      definitions().map((r) => (r.id === rule.id ? { ...r, ...change } : r)),
      (v) =>
        `${rule.name}: ${Object.entries(change)
          .map(([k, val]) => `${k} ${val}`)
          .join(', ')} (rule set v${v})`,
    )
    if (problems) setActionError(new ApiError(400, 'SLUICE_INVALID_RULES', 'The change was not saved', problems))
  }
  const saveRule = (original: string | undefined) => async (rule: RuleDefinition) => {
    const existing = definitions().findIndex((r) => r.id === original)
    const index = existing >= 0 ? existing : definitions().length
    const rules = existing >= 0 ? definitions().map((r, i) => (i === index ? rule : r)) : [...definitions(), rule]
    const problems = await put(rules, (v, n) => (n > 0 ? `Saved ${rule.id}: rule set version ${v}` : 'Nothing changed'))
    const own = `/rules/${index}`
    return problems?.map((e) => (e.pointer.startsWith(`${own}/`) ? { ...e, pointer: e.pointer.slice(own.length) } : e))
  }
  const testDoc = (original: string | undefined) => (rule: RuleDefinition) => {
    const others = definitions().filter((r) => r.id !== original && r.id !== rule.id)
    return { thresholds: ruleSet.data?.thresholds ?? {}, rules: [...others, rule] }
  }
  const removeRule = async (id: string) => {
    if (!confirm(`Delete rule ${id}? Its history stays on file.`)) return
    const problems = await put(
      definitions().filter((r) => r.id !== id),
      (v) => `Deleted ${id}: rule set version ${v}`,
    )
    if (!problems) navigate(['rules'])
  }

  const byObject = new Map<string, StoredRule[]>()
  for (const r of [...(ruleSet.data?.rules ?? [])].sort((a, b) => a.order - b.order || a.id.localeCompare(b.id))) {
    const list = byObject.get(r.object) ?? []
    list.push(r)
    byObject.set(r.object, list)
  }
  const edited = editing === 'new' ? newRule(objects, ruleSet.data?.rules ?? []) : ruleSet.data?.rules.find((r) => r.id === editing)

  return html`<div class="stack">
    <div class="toolbar">
      ${ruleSet.data && html`<span class="muted">Rule set version ${ruleSet.data.version}${ruleSet.data.created_by ? ` · by ${ruleSet.data.created_by}` : ''}</span>`}
      <span class="spacer"></span>
      <label class="inline">Counters for <select value=${period} onChange=${(e: Event) => setPeriod(Number((e.target as HTMLSelectElement).value))}>
        ${PERIODS.map((p) => html`<option value=${p.minutes}>${p.label}</option>`)}</select></label>
      ${admin && html`<a class="btn small primary" href=${href(['rules'], { edit: 'new' })} data-testid="new-rule">+ New rule</a>`}
    </div>
    ${actionError && html`<${ErrorBox} error=${actionError} title="The change was not saved" />`}
    ${stats.error && html`<${ErrorBox} error=${stats.error} title="Rule counters could not be loaded" />`}
    ${!admin && html`<${NeedsAdmin} what="The rule set" />`}
    ${ruleSet.error && html`<${ErrorBox} error=${ruleSet.error} title="Rules could not be loaded" onRetry=${ruleSet.reload} />`}
    ${admin && !ruleSet.data && !ruleSet.error && html`<${Loading} />`}
    ${ruleSet.data && byObject.size === 0 && html`<${Empty} title="No rules yet">Add one with “New rule”, or apply a file with <code>npx sluice rules apply rules.json</code>.</${Empty}>`}
    ${[...byObject].map(
      ([object, rules]) =>
        html`<${RuleTable} key=${object} object=${object} rules=${rules} counters=${counters} thresholds=${ruleSet.data?.thresholds[object]} toggle=${toggle} />`,
    )}
    ${
      !admin &&
      stats.data &&
      html`<${Card} title="Rule counters"><table class="data"><thead><tr><th>Rule</th><th class="num">Hits</th><th class="num">Errors</th><th class="num">Evaluated</th></tr></thead>
        <tbody>${stats.data.rules.map((c) => html`<tr><td><code>${c.rule_id}</code></td><td class="num">${formatNumber(c.hits)}</td><td class="num">${formatNumber(c.errors)}</td><td class="num">${formatNumber(c.evaluations)}</td></tr>`)}</tbody></table></${Card}>`
    }
    ${
      edited &&
      admin &&
      html`<${RuleEditor} key=${editing} rule=${'version' in edited ? definitionOf(edited as StoredRule) : edited} creating=${editing === 'new'} objects=${objects}
        save=${saveRule(editing === 'new' ? undefined : editing)} testDoc=${routes.has('POST /rules/test') ? testDoc(editing === 'new' ? undefined : editing) : undefined}
        remove=${editing !== 'new' ? () => removeRule(editing as string) : undefined}
        onClose=${() => navigate(['rules'])} />`
    }
    ${toast}
  </div>`
}
