/**
 * The pages an upload link opens: self-contained HTML (inline CSS and script allowed by a per-response nonce,
 * nothing loaded from elsewhere), so they work offline and leak the token to no third party.
 */

const escapeHtml = (text: string) => text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] as string)

/** The headers every link page is sent with: only its own inline code runs, and the token never leaves in a Referer. */
export function pageHeaders(nonce: string): Record<string, string> {
  return {
    'content-type': 'text/html; charset=utf-8',
    'content-security-policy': `default-src 'none'; script-src 'nonce-${nonce}'; style-src 'nonce-${nonce}'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`,
    'referrer-policy': 'no-referrer',
    'cache-control': 'no-store',
    'x-content-type-options': 'nosniff',
  }
}

const STYLE = `
  :root { color-scheme: light dark; --accent: #2f6fde; --bad: #c0392b; --good: #1e8449; }
  body { font: 16px/1.5 system-ui, sans-serif; max-width: 40rem; margin: 3rem auto; padding: 0 1rem; }
  h1 { font-size: 1.4rem; }
  .meta { color: GrayText; }
  #drop { border: 2px dashed GrayText; border-radius: 8px; padding: 2.5rem 1rem; text-align: center; margin: 1.5rem 0; }
  #drop.over { border-color: var(--accent); background: color-mix(in srgb, var(--accent) 10%, transparent); }
  progress { width: 100%; height: 1rem; }
  .hidden { display: none; }
  .error { color: var(--bad); }
  .done { color: var(--good); }
  dl { display: grid; grid-template-columns: max-content auto; gap: .2rem 1rem; }
  dt { color: GrayText; }
  dd { margin: 0; font-variant-numeric: tabular-nums; }
`

function page(nonce: string, title: string, body: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>${escapeHtml(title)} · Sluice</title>
<style nonce="${nonce}">${STYLE}</style>
</head>
<body>
${body}
</body>
</html>
`
}

/** Why a link cannot be used, as a page: 403, nothing stored. */
export function refusedPage(nonce: string, title: string, message: string): string {
  return page(
    nonce,
    title,
    `<h1 id="refused">${escapeHtml(title)}</h1>
<p>${escapeHtml(message)}</p>
<p class="meta">Ask whoever sent you this link for a new one. Nothing was uploaded.</p>`,
  )
}

const SCRIPT = `
const link = JSON.parse(document.getElementById('link').textContent)
const $ = (id) => document.getElementById(id)
const FINAL = ['completed', 'completed_with_errors', 'failed', 'cancelled']
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

function fail(message) {
  $('message').textContent = message
  $('message').className = 'error'
  $('picker').classList.remove('hidden')
}

function upload(file) {
  if (!/\\.(csv|ndjson|jsonl|json)(\\.gz)?$/i.test(file.name)) return fail(file.name + ' is not a file Sluice reads: .csv, .ndjson, .jsonl or .json, optionally .gz')
  if (file.size > link.maxBytes) return fail(file.name + ' is larger than the limit of ' + link.maxBytes + ' bytes')
  $('picker').classList.add('hidden')
  $('message').textContent = ''
  $('uploading').classList.remove('hidden')
  $('upload-name').textContent = file.name
  const xhr = new XMLHttpRequest()
  xhr.open('POST', location.pathname + '?file_name=' + encodeURIComponent(file.name))
  xhr.setRequestHeader('content-type', 'application/octet-stream')
  xhr.upload.addEventListener('progress', (e) => {
    if (!e.lengthComputable) return
    $('upload-progress').max = e.total
    $('upload-progress').value = e.loaded
    $('upload-percent').textContent = Math.floor((e.loaded / e.total) * 100) + '%'
  })
  xhr.addEventListener('load', () => {
    let body = {}
    try { body = JSON.parse(xhr.responseText) } catch {}
    if (xhr.status !== 202) return fail(body.detail || 'the upload failed (' + xhr.status + ')')
    $('upload-percent').textContent = '100%'
    follow(body.status_url)
  })
  xhr.addEventListener('error', () => fail('the upload was interrupted; try again'))
  xhr.send(file)
}

function show(job) {
  const c = job.counts
  $('job-state').textContent = job.state.replaceAll('_', ' ')
  $('job-progress').value = job.progress.percent
  $('count-total').textContent = c.total ?? '…'
  $('count-accepted').textContent = c.accepted
  $('count-rejected').textContent = c.rejected
  $('count-stored').textContent = c.stored
  if (!FINAL.includes(job.state)) return
  const ok = job.state === 'completed'
  $('result').className = ok ? 'done' : 'error'
  $('result').textContent = ok
    ? 'Done: all ' + c.accepted + ' records were accepted.'
    : job.state === 'completed_with_errors'
      ? 'Done: ' + c.accepted + ' records accepted, ' + c.rejected + ' rejected.'
      : 'The file could not be ingested: ' + (job.error || job.state)
  if (c.rejected > 0) {
    $('errors-link').href = job.errors_url
    $('errors-link').classList.remove('hidden')
  }
  $('again').classList.remove('hidden')
}

async function follow(url) {
  $('job').classList.remove('hidden')
  for (;;) {
    const res = await fetch(url, { headers: { accept: 'application/json' } })
    if (!res.ok) return fail('cannot follow the job (' + res.status + ')')
    const job = await res.json()
    show(job)
    if (FINAL.includes(job.state)) return
    await sleep(500)
  }
}

const drop = $('drop')
drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over') })
drop.addEventListener('dragleave', () => drop.classList.remove('over'))
drop.addEventListener('drop', (e) => {
  e.preventDefault()
  drop.classList.remove('over')
  if (e.dataTransfer.files.length) upload(e.dataTransfer.files[0])
})
$('file').addEventListener('change', () => { if ($('file').files.length) upload($('file').files[0]) })
`

/** The upload page of a usable link: what it is for, until when, a picker and drop zone, then the job's progress and result. */
export function uploadPage(nonce: string, view: { object: string; expiresAt: string; uploadsLeft: number | null; maxBytes: number }): string {
  const expires = `${view.expiresAt.slice(0, 16).replace('T', ' ')} UTC`
  const left = view.uploadsLeft === null ? '' : ` · ${view.uploadsLeft} upload${view.uploadsLeft === 1 ? '' : 's'} left`
  const data = JSON.stringify({ maxBytes: view.maxBytes }).replace(/</g, '\\u003c')
  return page(
    nonce,
    `Upload ${view.object} records`,
    `<h1>Upload <span id="object">${escapeHtml(view.object)}</span> records</h1>
<p class="meta">This link expires <span id="expires">${expires}</span>${left}. CSV with a header row, NDJSON or a JSON array, optionally gzipped (.gz).</p>
<section id="picker">
  <label id="drop">Drop a file here, or <input type="file" id="file" accept=".csv,.ndjson,.jsonl,.json,.gz"></label>
</section>
<p id="message" role="status"></p>
<section id="uploading" class="hidden">
  <p>Uploading <strong id="upload-name"></strong>: <span id="upload-percent">0%</span></p>
  <progress id="upload-progress" max="1" value="0"></progress>
</section>
<section id="job" class="hidden">
  <p>Processing: <strong id="job-state">queued</strong></p>
  <progress id="job-progress" max="100" value="0"></progress>
  <dl>
    <dt>records</dt><dd id="count-total">…</dd>
    <dt>accepted</dt><dd id="count-accepted">0</dd>
    <dt>rejected</dt><dd id="count-rejected">0</dd>
    <dt>queryable</dt><dd id="count-stored">0</dd>
  </dl>
  <p id="result" role="status"></p>
  <p><a id="errors-link" class="hidden" download>Download the error report (CSV)</a></p>
  <p id="again" class="hidden"><a href="">Upload another file</a></p>
</section>
<script type="application/json" id="link">${data}</script>
<script nonce="${nonce}">${SCRIPT}</script>`,
  )
}
