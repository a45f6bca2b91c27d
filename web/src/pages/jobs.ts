import { html } from 'htm/preact'
import { useEffect, useState } from 'preact/hooks'
import { api, download } from '../api.ts'
import { navigate, type Route } from '../router.ts'
import { canIngest, primaryObject, useSigned } from '../session.ts'
import type { JobState, JobStatus } from '../types.ts'
import {
  Badge,
  Card,
  CodeBlock,
  Empty,
  ErrorBox,
  formatBytes,
  formatDuration,
  formatNumber,
  formatTime,
  Loading,
  ProgressBar,
  type Tone,
  useApi,
  useToast,
} from '../ui.ts'

const FINAL: ReadonlySet<JobState> = new Set(['completed', 'completed_with_errors', 'failed', 'cancelled'])
const STATE_TONE: Record<JobState, Tone> = {
  queued: 'muted',
  validating: 'info',
  processing: 'info',
  completed: 'ok',
  completed_with_errors: 'warn',
  failed: 'bad',
  cancelled: 'muted',
}

/** What POST /batch needs to hear about a file, from its name. */
function uploadHeaders(file: File): Record<string, string> | undefined {
  const name = file.name.toLowerCase().replace(/\.gz$/, '')
  const type = name.endsWith('.csv')
    ? 'text/csv'
    : /\.(ndjson|jsonl)$/.test(name)
      ? 'application/x-ndjson'
      : name.endsWith('.json')
        ? 'application/json'
        : undefined
  if (!type) return undefined
  return { 'content-type': type, ...(file.name.toLowerCase().endsWith('.gz') && { 'content-encoding': 'gzip' }) }
}

function UploadForm(props: { onUploaded: (jobId: string) => void }) {
  const { objects } = useSigned()
  const [object, setObject] = useState(primaryObject(objects) ?? '')
  const [file, setFile] = useState<File>()
  const [updateSchema, setUpdateSchema] = useState(false)
  const [evaluateRules, setEvaluateRules] = useState(true)
  const [error, setError] = useState<Error>()
  const [busy, setBusy] = useState(false)
  const headers = file && uploadHeaders(file)
  const submit = async (e: Event) => {
    e.preventDefault()
    if (!file || !headers) return
    setBusy(true)
    setError(undefined)
    try {
      const query = new URLSearchParams({ object, file_name: file.name, update_schema: String(updateSchema), evaluate_rules: String(evaluateRules) })
      const job = await api<{ job_id: string }>('POST', `/batch?${query}`, file, headers)
      setFile(undefined)
      ;(e.target as HTMLFormElement).reset()
      props.onUploaded(job.job_id)
    } catch (err) {
      setError(err as Error)
    } finally {
      setBusy(false)
    }
  }
  return html`<form class="upload-form" onSubmit=${submit}>
    <label>Object
      <select value=${object} onChange=${(e: Event) => setObject((e.target as HTMLSelectElement).value)}>${objects.map((o) => html`<option value=${o}>${o}</option>`)}</select>
    </label>
    <label class="grow">File <span class="muted small">(CSV with a header row, NDJSON or a JSON array; optionally .gz)</span>
      <input type="file" accept=".csv,.ndjson,.jsonl,.json,.gz" onChange=${(e: Event) => setFile((e.target as HTMLInputElement).files?.[0])} data-testid="upload-file" />
    </label>
    <label class="check"><input type="checkbox" checked=${updateSchema} onChange=${(e: Event) => setUpdateSchema((e.target as HTMLInputElement).checked)} /> evolve the schema</label>
    <label class="check" title="Off for historical backfill: the rules record outcomes but raise no alerts">
      <input type="checkbox" checked=${evaluateRules} onChange=${(e: Event) => setEvaluateRules((e.target as HTMLInputElement).checked)} /> raise alerts</label>
    <button class="btn primary" type="submit" disabled=${busy || !headers}>${busy ? 'Uploading…' : 'Upload'}</button>
    ${file && !headers && html`<p class="field-error">Name the file .csv, .ndjson, .jsonl or .json (optionally .gz) so its format is known.</p>`}
    ${error && html`<div class="wide"><${ErrorBox} error=${error} title="The upload was refused" /></div>`}
  </form>`
}

function Counts(props: { job: JobStatus }) {
  const { counts } = props.job
  return html`<span class="counts">
    <span title="accepted">${formatNumber(counts.accepted)} ok</span>
    ${counts.rejected > 0 && html` · <span class="text-bad" title="rejected">${formatNumber(counts.rejected)} rejected</span>`}
    <span class="muted"> of ${counts.total === null ? '?' : formatNumber(counts.total)}</span>
    <div class="muted small">${formatNumber(counts.stored)} stored${props.job.counts.evaluated ? ` · ${formatNumber(counts.evaluated)} evaluated` : ''}</div>
  </span>`
}

function JobDetail(props: { job: JobStatus }) {
  const { job } = props
  return html`<div class="job-detail">
    <dl class="kv inline">
      ${Object.entries(job.timestamps).map(([k, v]) => v && html`<dt>${k.replace(/_at$/, '')}</dt><dd title=${v}>${formatTime(v)}</dd>`)}
      <dt>format</dt><dd>${job.format}</dd>
      <dt>size</dt><dd>${formatBytes(job.payload_bytes)}</dd>
      <dt>source</dt><dd>${job.source}</dd>
    </dl>
    ${job.error && html`<p class="text-bad">${job.error}</p>`}
    ${
      job.first_errors.length > 0 &&
      html`<h4>First rejected rows</h4><table class="data compact"><thead><tr><th class="num">Row</th><th>Record</th><th>Field</th><th>Why</th></tr></thead>
        <tbody>${job.first_errors.map((e) => html`<tr><td class="num">${e.row}</td><td><code>${e.record_key ?? '—'}</code></td><td><code>${e.pointer || '/'}</code></td><td>${e.message}</td></tr>`)}</tbody></table>`
    }
  </div>`
}

/** A job's row, and its details under it when open; one keyed unit, so its progress bar is never redrawn from zero. */
function JobRow(props: {
  job: JobStatus
  open: boolean
  canCancel: boolean
  onToggle: () => void
  onCancel: () => void
  onErrors: (format: 'csv' | 'ndjson') => void
}) {
  const { job } = props
  const tone = job.state === 'failed' ? 'bad' : job.state === 'completed_with_errors' ? 'warn' : job.state === 'completed' ? 'ok' : undefined
  return html`<tr class=${`clickable ${props.open ? 'selected' : ''}`} data-job-id=${job.job_id} onClick=${props.onToggle}>
      <td><code>${job.job_id}</code><div class="muted small">${job.file_name ?? job.source}</div></td>
      <td>${job.object ?? html`<span class="muted">from file</span>`}</td>
      <td><${Badge} tone=${STATE_TONE[job.state]}>${job.state.replace(/_/g, ' ')}</${Badge}></td>
      <td class="progress-col">
        <${ProgressBar} percent=${job.progress.percent} secondary=${job.progress.stored_percent} label=${`${job.job_id} progress`} tone=${tone} />
        <div class="small muted">${job.progress.percent}% processed · ${job.progress.stored_percent}% stored</div>
      </td>
      <td><${Counts} job=${job} /></td>
      <td class="nowrap">${formatDuration(job.timings_ms.total)}</td>
      <td class="nowrap" title=${job.timestamps.created_at ?? ''}>${formatTime(job.timestamps.created_at)}</td>
      <td class="actions" onClick=${(e: Event) => e.stopPropagation()}>
        ${
          job.counts.rejected > 0 &&
          html`<button class="btn small" onClick=${() => props.onErrors('csv')} title="Every rejected row, as CSV">Errors CSV</button>
            <button class="btn small ghost" onClick=${() => props.onErrors('ndjson')}>NDJSON</button>`
        }
        ${!FINAL.has(job.state) && props.canCancel && html`<button class="btn small danger" onClick=${props.onCancel}>Cancel</button>`}
      </td>
    </tr>
    ${props.open && html`<tr class="detail-row"><td colspan="8"><${JobDetail} job=${job} /></td></tr>`}`
}

export function JobsPage(props: { route: Route }) {
  const { key } = useSigned()
  const [active, setActive] = useState(true)
  const jobs = useApi<{ jobs: JobStatus[] }>('/batch-status?limit=100', active ? 1000 : 5000)
  const [toast, showToast] = useToast()
  const [actionError, setActionError] = useState<Error>()
  const open = props.route.params.get('job') ?? undefined
  const list = jobs.data?.jobs
  // Every second while a job moves, so its progress bar moves with it; every 5 s otherwise.
  const anyActive = list?.some((j) => !FINAL.has(j.state)) ?? true
  useEffect(() => setActive(anyActive), [anyActive])

  const cancel = async (job: JobStatus) => {
    if (!confirm(`Cancel job ${job.job_id}? Records already accepted stay stored.`)) return
    try {
      await api('DELETE', `/batch-status/${job.job_id}`)
      showToast(`Cancelling ${job.job_id}`)
      jobs.reload()
    } catch (err) {
      setActionError(err as Error)
    }
  }
  const errorsReport = (job: JobStatus, format: 'csv' | 'ndjson') =>
    download(job.errors_url, format === 'csv' ? 'text/csv' : 'application/x-ndjson', `${job.job_id}-errors.${format}`).catch((err) => setActionError(err))
  const toggle = (jobId: string) => navigate(['jobs'], { job: open === jobId ? undefined : jobId })

  return html`<div class="stack">
    ${
      canIngest(key) &&
      html`<${Card} title="Upload a file">
        <${UploadForm} onUploaded=${(id: string) => {
          showToast(`Job ${id} queued`)
          setActive(true)
          jobs.reload()
          navigate(['jobs'], { job: id })
        }} />
      </${Card}>`
    }
    <${Card} title="Jobs" testid="jobs-card" actions=${html`<span class="muted small">${active ? 'refreshing every second' : 'refreshing every 5 s'}</span>`}>
      ${actionError && html`<${ErrorBox} error=${actionError} />`}
      ${jobs.error && html`<${ErrorBox} error=${jobs.error} title="Jobs could not be loaded" onRetry=${jobs.reload} />`}
      ${
        !list
          ? !jobs.error && html`<${Loading} />`
          : list.length === 0
            ? html`<${Empty} title="No batch jobs yet" testid="jobs-empty">
                <p>Upload a file above, or send many records in one request:</p>
                <${CodeBlock} text=${`curl -s -X POST "${location.origin}/batch?object=transaction" -H "Authorization: Bearer $KEY" \\\n  -H 'Content-Type: application/x-ndjson' --data-binary @transactions.ndjson`} />
              </${Empty}>`
            : html`<table class="data jobs" data-testid="jobs-table">
              <thead><tr><th>Job</th><th>Object</th><th>State</th><th class="progress-col">Progress</th><th>Records</th><th>Time</th><th>Created</th><th></th></tr></thead>
              <tbody>
                ${list.map(
                  (job) => html`<${JobRow} key=${job.job_id} job=${job} open=${open === job.job_id} canCancel=${canIngest(key)}
                    onToggle=${() => toggle(job.job_id)} onCancel=${() => cancel(job)} onErrors=${(format: 'csv' | 'ndjson') => errorsReport(job, format)} />`,
                )}
              </tbody>
            </table>`
      }
    </${Card}>
    ${toast}
  </div>`
}
