import { html } from 'htm/preact'
import { useState } from 'preact/hooks'
import { useLiveEvent } from '../live.ts'
import { href, navigate, type Route } from '../router.ts'
import { isAdmin, useSigned } from '../session.ts'
import type { Alert, RuleSet } from '../types.ts'
import {
  Badge,
  Card,
  DECISION_TONE,
  Empty,
  ErrorBox,
  formatTime,
  Loading,
  NotAvailable,
  SEVERITY_TONE,
  timeAgo,
  useApi,
  useCursorPages,
  useNow,
} from '../ui.ts'

const SEVERITIES = ['low', 'medium', 'high', 'critical']
const DECISIONS = ['approve', 'review', 'block']
const MAX_ROWS = 500

interface AlertRow extends Alert {
  arrived?: number
}

const keyOf = (a: Alert) => `${a.record_id}:${a.rule_id}`

export function AlertsPage(props: { route: Route }) {
  const { routes, objects, key } = useSigned()
  const { params } = props.route
  const filter = {
    object: params.get('object') ?? '',
    rule: params.get('rule') ?? '',
    severity: params.get('severity') ?? '',
    decision: params.get('decision') ?? '',
    mode: params.get('mode') === 'shadow' ? 'shadow' : 'live',
  }
  const available = routes.has('GET /alerts')
  const query = `/alerts?limit=100&mode=${filter.mode}${filter.object ? `&object=${filter.object}` : ''}${filter.rule ? `&rule=${filter.rule}` : ''}`
  const ruleSet = useApi<RuleSet>(available && isAdmin(key) && routes.has('GET /rules') ? '/rules' : null)
  const { rows, setRows, cursor, status, loadOlder } = useCursorPages<AlertRow, { alerts: Alert[]; next_cursor?: string }>(
    available ? query : null,
    (page) => page.alerts,
  )
  const [paused, setPaused] = useState(false)
  const now = useNow(5000)

  const shows = (a: Alert) =>
    (!filter.object || a.object === filter.object) &&
    (!filter.rule || a.rule_id === filter.rule) &&
    (!filter.severity || a.severity === filter.severity) &&
    (!filter.decision || a.decision === filter.decision)

  // The live feed carries live hits only; shadow hits are read from the store.
  useLiveEvent('alert', ({ alert }) => {
    if (paused || filter.mode !== 'live' || !shows(alert)) return
    setRows((current) => [{ ...alert, arrived: Date.now() }, ...current.filter((a) => keyOf(a) !== keyOf(alert))].slice(0, MAX_ROWS))
  })

  if (!available)
    return html`<${NotAvailable} feature="The alert feed"><p>Alerts appear here once this server has the rule stage's API (<code>GET /alerts</code>).</p></${NotAvailable}>`

  const ruleNames = new Map((ruleSet.data?.rules ?? []).map((r) => [r.id, r.name]))
  const ruleIds = [...new Set([...ruleNames.keys(), ...rows.map((a) => a.rule_id)])].sort()
  const setFilter = (name: string, value: string) =>
    navigate(['alerts'], { ...filter, mode: filter.mode === 'live' ? undefined : filter.mode, [name]: value || undefined })
  const select = (name: keyof typeof filter, label: string, values: string[]) =>
    html`<label class="inline">${label} <select value=${filter[name]} onChange=${(e: Event) => setFilter(name, (e.target as HTMLSelectElement).value)} data-testid=${`filter-${name}`}>
      <option value="">all</option>${values.map((v) => html`<option value=${v}>${v}</option>`)}</select></label>`
  const visible = rows.filter(shows)
  return html`<${Card} testid="alerts-card">
    <div class="toolbar">
      ${select('object', 'Object', objects)}
      ${select('rule', 'Rule', ruleIds)}
      ${select('severity', 'Severity', SEVERITIES)}
      ${select('decision', 'Decision', DECISIONS)}
      <div class="segmented" role="group" aria-label="Mode">
        <a href=${href(['alerts'], { ...filter, mode: undefined })} class=${filter.mode === 'live' ? 'seg active' : 'seg'}>Live rules</a>
        <a href=${href(['alerts'], { ...filter, mode: 'shadow' })} class=${filter.mode === 'shadow' ? 'seg active' : 'seg'} title="Hits of rules in shadow mode: recorded, no alert raised">Shadow</a>
      </div>
      <div class="toolbar-right">
        <button class="btn small" onClick=${() => setPaused(!paused)}>${paused ? '▶ Resume live' : '❚❚ Pause live'}</button>
      </div>
    </div>
    ${status.error && html`<${ErrorBox} error=${status.error} title="Alerts could not be loaded" />`}
    ${
      visible.length === 0
        ? status.loading
          ? html`<${Loading} />`
          : html`<${Empty} title="No alerts" testid="alerts-empty">
              <p>${rows.length > 0 ? 'None match these filters. ' : 'An alert is raised when a live rule matches a record; new ones appear here as they happen. '}See the <a
                href="#/rules">Rules</a> page for what is checked.</p>
            </${Empty}>`
        : html`<div class="table-scroll"><table class="data" data-testid="alerts-table">
          <thead><tr><th>When</th><th>Severity</th><th>Rule</th><th>Record</th><th>Account</th><th class="num">Score</th><th>Decision</th><th>Features</th></tr></thead>
          <tbody>
            ${visible.map(
              (a) => html`<tr key=${keyOf(a)} class=${a.arrived && now - a.arrived < 3000 ? 'flash' : ''}>
                <td class="nowrap" title=${formatTime(a.evaluated_at)}>${timeAgo(a.evaluated_at, now)}</td>
                <td><${Badge} tone=${SEVERITY_TONE[a.severity]}>${a.severity}</${Badge}></td>
                <td>${a.rule_name ?? ruleNames.get(a.rule_id) ?? a.rule_id}<div class="muted small"><code>${a.rule_id}</code> v${a.rule_version}</div></td>
                <td><a href=${href(['records', a.object], { record: a.record_id })}>${a.object} <code>${a.record_id.slice(-10)}</code></a>
                  <div class="muted small" title=${a.record_time}>${formatTime(a.record_time)}</div></td>
                <td>${a.account_id ? html`<a href=${href(['records', a.object], { 'f.account_id': a.account_id })}><code>${a.account_id}</code></a>` : html`<span class="muted">—</span>`}</td>
                <td class="num">${a.score}</td>
                <td><${Badge} tone=${DECISION_TONE[a.decision]}>${a.decision}</${Badge}></td>
                <td class="small">${Object.entries(a.features).map(([k, v]) => html`<span class="feature">${k} <b>${Number.isInteger(v) ? v : v.toFixed(2)}</b></span>`)}</td>
              </tr>`,
            )}
          </tbody>
        </table></div>
        <div class="table-foot"><span class="muted small">${visible.length} shown, newest first${paused ? ' · paused' : ''}</span>
          ${cursor && html`<button class="btn small" onClick=${loadOlder}>Load older</button>`}</div>`
    }
  </${Card}>`
}
