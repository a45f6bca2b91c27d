import { html } from 'htm/preact'
import { useState } from 'preact/hooks'
import { api } from '../api.ts'
import { isAdmin, primaryObject, useSigned } from '../session.ts'
import type { KeyInfo } from '../types.ts'
import { Badge, Card, CodeBlock, ErrorBox, formatTime, Loading, NeedsAdmin, NotAvailable, type Tone, timeAgo, useApi, useToast } from '../ui.ts'

const SCOPES = [
  { scope: 'ingest', what: 'send records and batches' },
  { scope: 'read', what: 'query, watch this dashboard' },
  { scope: 'admin', what: 'everything: schemas, rules, keys' },
]

function ApiKeys(props: { onToast: (message: string) => void }) {
  const { key: me } = useSigned()
  const keys = useApi<{ keys: KeyInfo[] }>('/keys')
  const [name, setName] = useState('')
  const [scopes, setScopes] = useState<string[]>(['read'])
  const [created, setCreated] = useState<{ secret: string; key: KeyInfo }>()
  const [error, setError] = useState<Error>()
  const create = async (e: Event) => {
    e.preventDefault()
    setError(undefined)
    try {
      setCreated(await api<{ secret: string; key: KeyInfo }>('POST', '/keys', { name: name.trim(), scopes }))
      setName('')
      keys.reload()
    } catch (err) {
      setError(err as Error)
    }
  }
  const revoke = async (key: KeyInfo) => {
    const own = key.id === me.id ? ' This is the key you are signed in with: you will be signed out.' : ''
    if (!confirm(`Revoke ${key.name} (${key.id})? Every client using it is refused at once.${own}`)) return
    try {
      await api('DELETE', `/keys/${key.id}`)
      props.onToast(`Revoked ${key.name}`)
      keys.reload()
    } catch (err) {
      setError(err as Error)
    }
  }
  const toggleScope = (scope: string) => setScopes((s) => (s.includes(scope) ? s.filter((x) => x !== scope) : [...s, scope]))
  return html`<${Card} title="API keys" testid="api-keys">
    <form class="inline-form" onSubmit=${create}>
      <input type="text" placeholder="name, e.g. fraud-dashboard" value=${name} onInput=${(e: Event) => setName((e.target as HTMLInputElement).value)} required
        aria-label="Key name" data-testid="key-name" />
      ${SCOPES.map(
        (s) =>
          html`<label class="check" title=${s.what}><input type="checkbox" checked=${scopes.includes(s.scope)} onChange=${() => toggleScope(s.scope)} /> ${s.scope}</label>`,
      )}
      <button class="btn primary small" type="submit" disabled=${!name.trim() || scopes.length === 0} data-testid="create-key">Create key</button>
    </form>
    ${
      created &&
      html`<div class="secret" data-testid="new-key-secret">
        <p><b>${created.key.name}</b> created. Copy its secret now: it is shown only once and stored only as a hash.</p>
        <${CodeBlock} text=${created.secret} />
        <button class="btn small ghost" onClick=${() => setCreated(undefined)}>Done</button>
      </div>`
    }
    ${error && html`<${ErrorBox} error=${error} />`}
    ${keys.error && html`<${ErrorBox} error=${keys.error} onRetry=${keys.reload} />`}
    ${
      !keys.data
        ? !keys.error && html`<${Loading} />`
        : html`<table class="data" data-testid="keys-table">
          <thead><tr><th>Name</th><th>Id</th><th>Scopes</th><th>Created</th><th>Last used</th><th>Status</th><th></th></tr></thead>
          <tbody>${[...keys.data.keys].reverse().map(
            (k) => html`<tr key=${k.id} class=${k.revoked_at ? 'disabled' : ''}>
              <td><b>${k.name}</b>${k.id === me.id && html` <${Badge} tone="info">you</${Badge}>`}</td>
              <td><code>${k.id}</code></td>
              <td>${k.scopes.map((s) => html`<${Badge} tone=${s === 'admin' ? 'warn' : 'muted'}>${s}</${Badge}> `)}</td>
              <td title=${k.created_at}>${formatTime(k.created_at)}</td>
              <td title=${k.last_used_at ?? ''}>${timeAgo(k.last_used_at)}</td>
              <td>${k.revoked_at ? html`<${Badge} tone="bad">revoked ${formatTime(k.revoked_at)}</${Badge}>` : html`<${Badge} tone="ok">active</${Badge}>`}</td>
              <td>${!k.revoked_at && html`<button class="btn small danger" onClick=${() => revoke(k)}>Revoke</button>`}</td>
            </tr>`,
          )}</tbody>
        </table>`
    }
  </${Card}>`
}

interface UploadLink {
  id: string
  object: string
  expires_at: string
  max_uploads: number | null
  uploads: number
  created_by: string
  created_at: string
  revoked_at: string | null
  state: 'active' | 'expired' | 'revoked' | 'used_up'
}

const LINK_TONE: Record<UploadLink['state'], Tone> = { active: 'ok', expired: 'muted', revoked: 'bad', used_up: 'muted' }

function UploadLinks(props: { onToast: (message: string) => void }) {
  const { routes, objects } = useSigned()
  const available = routes.has('GET /upload-links')
  const links = useApi<{ links: UploadLink[] }>(available ? '/upload-links' : null)
  const [object, setObject] = useState(primaryObject(objects) ?? '')
  const [expires, setExpires] = useState('24h')
  const [maxUploads, setMaxUploads] = useState('')
  const [created, setCreated] = useState<{ url: string; object: string; expires_at: string }>()
  const [error, setError] = useState<Error>()
  if (!available)
    return html`<${Card} title="Upload links"><${NotAvailable} feature="Upload links">
      <p>Secure links that let a person upload a file without an API key arrive with the flat-file feature.</p></${NotAvailable}></${Card}>`
  const create = async (e: Event) => {
    e.preventDefault()
    setError(undefined)
    try {
      setCreated(await api('POST', '/upload-links', { object, expires, ...(maxUploads && { max_uploads: Number(maxUploads) }) }))
      links.reload()
    } catch (err) {
      setError(err as Error)
    }
  }
  const revoke = async (link: UploadLink) => {
    if (!confirm(`Revoke the ${link.object} upload link ${link.id}? It stops working at once.`)) return
    try {
      await api('DELETE', `/upload-links/${link.id}`)
      props.onToast(`Revoked ${link.id}`)
      links.reload()
    } catch (err) {
      setError(err as Error)
    }
  }
  return html`<${Card} title="Upload links" testid="upload-links">
    <form class="inline-form" onSubmit=${create}>
      <label class="inline">Object <select value=${object} onChange=${(e: Event) => setObject((e.target as HTMLSelectElement).value)}>${objects.map((o) => html`<option value=${o}>${o}</option>`)}</select></label>
      <label class="inline">Expires in <select value=${expires} onChange=${(e: Event) => setExpires((e.target as HTMLSelectElement).value)}>
        ${['1h', '24h', '7d', '30d'].map((v) => html`<option value=${v}>${v}</option>`)}</select></label>
      <label class="inline">Uploads <input type="number" min="1" placeholder="any" class="narrow" value=${maxUploads} onInput=${(e: Event) => setMaxUploads((e.target as HTMLInputElement).value)} /></label>
      <button class="btn primary small" type="submit">Create link</button>
    </form>
    ${
      created &&
      html`<div class="secret"><p>Send this link to whoever uploads the ${created.object} file. It works until ${formatTime(created.expires_at)} and is shown only now.</p>
        <${CodeBlock} text=${created.url} /><button class="btn small ghost" onClick=${() => setCreated(undefined)}>Done</button></div>`
    }
    ${error && html`<${ErrorBox} error=${error} />`}
    ${links.error && html`<${ErrorBox} error=${links.error} />`}
    ${
      !links.data
        ? !links.error && html`<${Loading} />`
        : links.data.links.length === 0
          ? html`<p class="muted">No upload links yet.</p>`
          : html`<table class="data"><thead><tr><th>Link</th><th>Object</th><th>State</th><th>Uploads</th><th>Expires</th><th>Created</th><th></th></tr></thead>
            <tbody>${links.data.links.map(
              (
                l,
              ) => html`<tr key=${l.id}><td><code>${l.id}</code></td><td>${l.object}</td><td><${Badge} tone=${LINK_TONE[l.state]}>${l.state.replace('_', ' ')}</${Badge}></td>
                <td>${l.uploads}${l.max_uploads ? ` of ${l.max_uploads}` : ''}</td><td title=${l.expires_at}>${formatTime(l.expires_at)}</td>
                <td>${formatTime(l.created_at)} <span class="muted small">by ${l.created_by}</span></td>
                <td>${l.state === 'active' && html`<button class="btn small danger" onClick=${() => revoke(l)}>Revoke</button>`}</td></tr>`,
            )}</tbody></table>`
    }
  </${Card}>`
}

function SftpUsers() {
  return html`<${Card} title="SFTP users">
    <${NotAvailable} feature="Managing SFTP users in the page">
      <p>SFTP users are managed on the server with the CLI:</p>
      <${CodeBlock} text=${'npx sluice sftp add-user acme --password\nnpx sluice sftp list\nnpx sluice sftp remove acme'} />
    </${NotAvailable}>
  </${Card}>`
}

export function AccessPage() {
  const { key } = useSigned()
  const [toast, showToast] = useToast()
  if (!isAdmin(key)) return html`<${NeedsAdmin} what="Access management" />`
  return html`<div class="stack">
    <${ApiKeys} onToast=${showToast} />
    <${UploadLinks} onToast=${showToast} />
    <${SftpUsers} />
    ${toast}
  </div>`
}
