import { html } from 'htm/preact'
import { useEffect, useMemo, useState } from 'preact/hooks'
import type uPlot from 'uplot'
import { colorOf, TimeChart } from '../chart.ts'
import { exampleCommand } from '../examples.ts'
import { live, useLiveRefresh } from '../live.ts'
import { href } from '../router.ts'
import { primaryObject, useSigned } from '../session.ts'
import type { JobStatus, LiveTick, ObjectSchemaDoc, ObjectStats, PipelineState, Readiness, RuleStats, SchemaVersion } from '../types.ts'
import {
  Badge,
  Card,
  CodeBlock,
  DECISION_TONE,
  Empty,
  ErrorBox,
  formatBytes,
  formatDuration,
  formatNumber,
  formatRate,
  formatTime,
  type Loaded,
  Loading,
  NotAvailable,
  Stat,
  type Tone,
  timeAgo,
  useApi,
  useNow,
} from '../ui.ts'

/** The chart's series: objects on file, then any other object the feed has seen. */
function objectsOf(known: string[], history: LiveTick[]): string[] {
  const seen = new Set(known)
  for (const tick of history) for (const object of Object.keys(tick.records)) seen.add(object)
  return [...seen]
}

function rateData(objects: string[], history: LiveTick[]): uPlot.AlignedData {
  return [history.map((t) => Math.round(t.at / 1000)), ...objects.map((o) => history.map((t) => t.records[o] ?? 0))]
}

/** Alerts per minute from the per-second ticks. */
function alertsPerMinute(history: LiveTick[]): uPlot.AlignedData {
  const minutes = new Map<number, number>()
  for (const tick of history) {
    const minute = Math.floor(tick.at / 60_000) * 60
    minutes.set(minute, (minutes.get(minute) ?? 0) + tick.alerts)
  }
  return [[...minutes.keys()], [...minutes.values()]]
}

function sumLast(history: LiveTick[], seconds: number, of: (t: LiveTick) => number): number {
  return history.slice(-seconds).reduce((n, t) => n + of(t), 0)
}

function FirstRecord(props: { schema: ObjectSchemaDoc | undefined }) {
  const send = props.schema ? `${exampleCommand(props.schema)}\n\n` : ''
  return html`<${Card} class="span-3" testid="first-record">
    <${Empty} title="No records yet">
      <p>Send Sluice a record and it shows up here within a second, with a key that has the ingest scope. The objects on file and their
        fields are on the <a href="#/schemas">Schemas</a> page.</p>
      <${CodeBlock} text=${`export KEY=sk_...\n${send}# or stream realistic sample data:\nnpx sluice demo --key $KEY --rate 20`} />
    </${Empty}>
  </${Card}>`
}

function LatestRecords(props: { idFields: Record<string, string> }) {
  const now = useNow(2000)
  const records = live.recentRecords.slice(0, 10)
  return html`<${Card} title="Latest records" testid="latest-records" actions=${html`<a href="#/records">All records →</a>`}>
    ${
      records.length === 0
        ? html`<p class="muted pad">Records appear here the moment they arrive.</p>`
        : html`<ul class="feed">
          ${records.map(
            (r) => html`<li key=${r.record_id} class="flash">
              <a class="feed-item" href=${href(['records', r.object], { record: r.record_id })}>
                <span class="dot" style=${{ background: colorOf(r.object) }}></span>
                <span class="feed-object">${r.object}</span>
                <code>${String(r.data[props.idFields[r.object]] ?? r.record_id)}</code>
                <span class="muted feed-time" title=${r.received_at}>${timeAgo(r.received_at, now)}</span>
              </a>
            </li>`,
          )}
        </ul>`
    }
  </${Card}>`
}

function ObjectsTable(props: { stats: ObjectStats[] | undefined; history: LiveTick[] }) {
  if (!props.stats) return html`<${Card} title="Objects"><${Loading} /></${Card}>`
  return html`<${Card} title="Objects" testid="objects-table">
    <table class="data">
      <thead><tr><th>Object</th><th class="num">Stored</th><th class="num">Rate (10 s)</th><th class="num">Rate (1 min)</th><th>Last received</th><th class="num">Freshness</th></tr></thead>
      <tbody>
        ${props.stats.map(
          (s) => html`<tr key=${s.object}>
            <td><a href=${href(['records', s.object])}><span class="dot" style=${{ background: colorOf(s.object) }}></span>${s.object}</a></td>
            <td class="num">${formatNumber(s.total)}</td>
            <td class="num">${formatRate(sumLast(props.history, 10, (t) => t.records[s.object] ?? 0) / 10)}</td>
            <td class="num">${formatRate(s.rate_per_second)}</td>
            <td title=${s.last_received_at ?? ''}>${s.last_received_at ? formatTime(s.last_received_at) : html`<span class="muted">never</span>`}</td>
            <td class="num">${formatDuration(s.freshness_ms)}</td>
          </tr>`,
        )}
      </tbody>
    </table>
  </${Card}>`
}

function DecisionMix() {
  const { routes } = useSigned()
  const stats = useApi<RuleStats>(routes.has('GET /rules/stats') ? '/rules/stats?since_minutes=60' : null, 5000)
  if (!routes.has('GET /rules/stats')) return html`<${NotAvailable} feature="The decision mix" />`
  if (stats.error && !stats.data) return html`<${ErrorBox} error=${stats.error} title="Decisions could not be loaded" />`
  if (!stats.data) return html`<${Loading} />`
  const { decisions } = stats.data
  const total = decisions.approve + decisions.review + decisions.block
  if (total === 0) return html`<p class="muted">No decisions in the last hour: the rule stage decides on every record it evaluates.</p>`
  return html`<div data-testid="decision-mix">
    <div class="mix-bar">
      ${(['approve', 'review', 'block'] as const).map(
        (d) => decisions[d] > 0 && html`<div class=${`mix tone-${DECISION_TONE[d]}`} style=${{ flex: decisions[d] }} title=${`${d}: ${decisions[d]}`}></div>`,
      )}
    </div>
    <div class="mix-legend">
      ${(['approve', 'review', 'block'] as const).map(
        (d) =>
          html`<span><${Badge} tone=${DECISION_TONE[d]}>${d}</${Badge}> ${formatNumber(decisions[d])} <span class="muted">(${Math.round((decisions[d] / total) * 100)}%)</span></span>`,
      )}
    </div>
  </div>`
}

interface RoleHealth {
  role: string
  tone: Tone
  status: string
  detail: string
}

function roleHealth(pipeline: PipelineState | undefined, readiness: Readiness | undefined, jobs: JobStatus[] | undefined): RoleHealth[] {
  const out: RoleHealth[] = []
  const nats = readiness?.checks.nats
  out.push({
    role: 'ingress',
    tone: nats?.ok === false ? 'bad' : 'ok',
    status: nats?.ok === false ? 'NATS disconnected' : 'serving',
    detail: 'HTTP API and this dashboard',
  })
  if (pipeline) {
    for (const [role, label] of [
      ['sink', 'sink'],
      ['rules', 'rules'],
    ] as const) {
      const consumers = pipeline.consumers.filter((c) => c.role === role)
      if (consumers.length === 0) {
        out.push({ role: label, tone: 'muted', status: 'not running', detail: 'no consumer on file: no process has run this role yet' })
        continue
      }
      const attached = consumers.filter((c) => c.waiting > 0).length
      const lag = consumers.reduce((n, c) => n + c.pending + c.ack_pending, 0)
      const tone: Tone = attached === 0 ? 'bad' : lag > 10_000 ? 'warn' : 'ok'
      out.push({
        role: label,
        tone,
        status: attached === 0 ? 'no process attached' : `lag ${formatNumber(lag)}`,
        detail: `${attached} of ${consumers.length} consumer${consumers.length === 1 ? '' : 's'} attached: ${consumers.map((c) => c.name).join(', ')}`,
      })
    }
  }
  if (jobs) {
    const running = jobs.filter((j) => j.state === 'validating' || j.state === 'processing').length
    const queued = jobs.filter((j) => j.state === 'queued').length
    out.push({
      role: 'batch',
      tone: queued > 0 && running === 0 ? 'warn' : 'ok',
      status: running || queued ? `${running} running, ${queued} queued` : 'idle',
      detail: 'batch jobs from uploads and files',
    })
  }
  return out
}

type Consumer = PipelineState['consumers'][number]

/** One row per consumer, except the rule stage's partitions: one row for all of them, with their sums. */
function consumerRows(consumers: Consumer[]) {
  const row = (name: string, title: string, group: Consumer[]) => ({
    name,
    title,
    count: group.length,
    attached: group.filter((c) => c.waiting > 0).length,
    pending: group.reduce((n, c) => n + c.pending, 0),
    ack_pending: group.reduce((n, c) => n + c.ack_pending, 0),
    redelivered: group.reduce((n, c) => n + c.redelivered, 0),
  })
  const rules = consumers.filter((c) => c.role === 'rules')
  return [
    ...consumers.filter((c) => c.role !== 'rules').map((c) => row(c.name, c.stream, [c])),
    ...(rules.length > 0 ? [row(`rules (${rules.length} partitions)`, rules.map((c) => c.name).join(', '), rules)] : []),
  ]
}

/** `/readyz` answers 503 with the same report when a check fails, so it is read as it is rather than as an error. */
function useReadiness(everyMs: number): Readiness | undefined {
  const [readiness, setReadiness] = useState<Readiness>()
  useEffect(() => {
    const load = () =>
      fetch('/readyz')
        .then((res) => res.json() as Promise<Readiness>)
        .then(setReadiness, () => setReadiness(undefined))
    load()
    const timer = setInterval(load, everyMs)
    return () => clearInterval(timer)
  }, [everyMs])
  return readiness
}

function PipelineHealth(props: { pipeline: Loaded<PipelineState> }) {
  const { pipeline } = props
  const readiness = useReadiness(5000)
  const jobs = useApi<{ jobs: JobStatus[] }>('/batch-status?limit=100', 5000)
  const roles = roleHealth(pipeline.data, readiness, jobs.data?.jobs)
  return html`<${Card} title="Pipeline health" class="span-3" testid="pipeline-health">
    ${pipeline.error && html`<${ErrorBox} error=${pipeline.error} title="JetStream state could not be read" />`}
    <div class="roles">
      ${roles.map(
        (r) => html`<div class=${`role tone-${r.tone}`} title=${r.detail}>
          <div class="role-name"><span class="led"></span>${r.role}</div>
          <div class="role-status">${r.status}</div>
          <div class="muted small">${r.detail}</div>
        </div>`,
      )}
    </div>
    ${
      readiness &&
      html`<p class="small muted">Readiness: ${Object.entries(readiness.checks).map(
        ([name, c]) => html`<${Badge} tone=${c.ok ? 'ok' : 'bad'}>${name}${c.detail !== undefined ? `: ${c.detail}` : ''}</${Badge}> `,
      )}</p>`
    }
    ${
      pipeline.data
        ? html`<div class="two-col">
          <table class="data compact">
            <thead><tr><th>Stream</th><th class="num">Messages</th><th class="num">Size</th><th class="num">Last seq</th></tr></thead>
            <tbody>${pipeline.data.streams.map(
              (s) => html`<tr key=${s.name}><td title=${s.subjects.join(', ')}>${s.name}${!s.present && html` <${Badge} tone="bad">missing</${Badge}>`}</td>
                <td class="num">${formatNumber(s.messages)}</td><td class="num">${formatBytes(s.bytes)}</td><td class="num">${formatNumber(s.last_seq)}</td></tr>`,
            )}</tbody>
          </table>
          <table class="data compact">
            <thead><tr><th>Consumer</th><th class="num">Lag</th><th class="num">Unacked</th><th class="num">Redelivered</th><th>Attached</th></tr></thead>
            <tbody>${consumerRows(pipeline.data.consumers).map(
              (c) => html`<tr key=${c.name}><td title=${c.title}>${c.name}</td><td class="num">${formatNumber(c.pending)}</td>
                <td class="num">${formatNumber(c.ack_pending)}</td><td class="num">${formatNumber(c.redelivered)}</td>
                <td><${Badge} tone=${c.attached === 0 ? 'muted' : c.attached < c.count ? 'warn' : 'ok'}>${
                  c.count === 1 ? (c.attached ? 'yes' : 'no') : `${c.attached} of ${c.count}`
                }</${Badge}></td></tr>`,
            )}</tbody>
          </table>
        </div>`
        : !pipeline.error && html`<${Loading} />`
    }
  </${Card}>`
}

export function OverviewPage() {
  useLiveRefresh('tick', 'stats', 'stats_error', 'record', 'hello')
  const { objects } = useSigned()
  const initialStats = useApi<{ objects: ObjectStats[] }>('/stats')
  const schemas = useApi<{ objects: SchemaVersion[] }>('/schema')
  const pipeline = useApi<PipelineState>('/stats/pipeline', 3000)
  const stats = live.stats ?? initialStats.data?.objects
  const history = live.history
  const series = objectsOf(objects, history)
  const chartSeries = useMemo(() => series.map((o) => ({ label: o, color: colorOf(o) })), [series.join()])
  const idFields = Object.fromEntries((schemas.data?.objects ?? []).map((s) => [s.object, s.schema.id_field]))

  const total = stats?.reduce((n, s) => n + s.total, 0)
  const rateNow = sumLast(history, 10, (t) => Object.values(t.records).reduce((a, b) => a + b, 0)) / Math.max(1, Math.min(10, history.length))
  const freshness = stats?.map((s) => s.freshness_ms).filter((f): f is number => f !== null)
  const worstFreshness = freshness && freshness.length > 0 ? Math.max(...freshness) : null
  const alertsLastMinute = sumLast(history, 60, (t) => t.alerts)
  const sinkLag = pipeline.data?.consumers.filter((c) => c.role === 'sink' && c.stream === 'SLUICE_RECORDS').reduce((n, c) => n + c.pending + c.ack_pending, 0)
  const nothingYet = total === 0 && live.recentRecords.length === 0

  return html`<div class="grid overview">
    <div class="stats-row span-3">
      <${Stat} label="Records stored" testid="stat-total" value=${formatNumber(total)}
        sub=${stats?.map((s) => `${s.object} ${formatNumber(s.total)}`).join(' · ')} />
      <${Stat} label="Ingest rate" testid="stat-rate" value=${formatRate(rateNow)} sub="all objects, last 10 s" />
      <${Stat} label="Freshness" value=${formatDuration(worstFreshness)} sub="receipt to queryable, real-time records, last min"
        tone=${worstFreshness === null ? undefined : worstFreshness > 1000 ? 'warn' : 'ok'} />
      <${Stat} label="Alerts / min" testid="stat-alerts" value=${formatNumber(alertsLastMinute)} sub="live rule hits, last 60 s" />
      <${Stat} label="Sink lag" value=${formatNumber(sinkLag)} sub="accepted, not yet stored"
        tone=${sinkLag === undefined ? undefined : sinkLag > 10_000 ? 'warn' : 'ok'} />
    </div>
    ${live.statsError && html`<div class="span-3"><${ErrorBox} error=${new Error(live.statsError)} title="Totals and freshness are not available" /></div>`}
    ${nothingYet && html`<${FirstRecord} schema=${schemas.data?.objects.find((s) => s.object === primaryObject(objects))?.schema} />`}
    <${Card} title="Ingest rate per object" class="span-2" testid="rate-chart"
      actions=${html`<span class="muted small">records per second, since this server started watching (up to 15 min)</span>`}>
      <${TimeChart} series=${chartSeries} data=${rateData(series, history)} unit="/s" minSeconds=${120} />
    </${Card}>
    <${LatestRecords} idFields=${idFields} />
    <div class="span-2"><${ObjectsTable} stats=${stats} history=${history} /></div>
    <${Card} title="Decisions, last hour" testid="decisions">
      <${DecisionMix} />
      <h3 class="sub-head">Alerts per minute</h3>
      <${TimeChart} series=${[{ label: 'alerts', color: '#dc2626' }]} data=${alertsPerMinute(history)} height=${120} barSeconds=${60} minSeconds=${900} />
    </${Card}>
    <${PipelineHealth} pipeline=${pipeline} />
  </div>`
}
