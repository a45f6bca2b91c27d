import { html } from 'htm/preact'
import { useState } from 'preact/hooks'
import { ApiError, api, type FieldError } from '../api.ts'
import { isAdmin, primaryObject, useSigned } from '../session.ts'
import type { KeyInfo, SftpUserView, UploadLinkView } from '../types.ts'
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

const LINK_TONE: Record<UploadLinkView['state'], Tone> = { active: 'ok', expired: 'muted', revoked: 'bad', used_up: 'muted' }

function UploadLinks(props: { onToast: (message: string) => void }) {
  const { routes, objects } = useSigned()
  const available = routes.has('GET /upload-links')
  const links = useApi<{ links: UploadLinkView[] }>(available ? '/upload-links' : null)
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
  const revoke = async (link: UploadLinkView) => {
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

/** `ssh-ed25519 AAAA... carol@laptop` as `ed25519 carol@laptop`: the key's type and comment, not its bytes. */
function keyLabel(line: string): string {
  const [type = '', , ...comment] = line.split(/\s+/)
  return [type.replace(/^ssh-/, ''), ...comment].join(' ')
}

/** The field a server error points at: `/username`, `/body/username` and `/public_keys/1` name the form's fields. */
const fieldOf = (pointer: string) => pointer.replace(/^\/body/, '').split('/')[1] ?? ''
const SFTP_FIELDS = ['username', 'password', 'public_keys']

function SftpUsers(props: { onToast: (message: string) => void }) {
  const { routes } = useSigned()
  const available = routes.has('GET /sftp-users')
  const users = useApi<{ users: SftpUserView[] }>(available ? '/sftp-users' : null)
  const [username, setUsername] = useState('')
  const [password, setPassword] = useState('')
  const [keys, setKeys] = useState('')
  const [fieldErrors, setFieldErrors] = useState<FieldError[]>([])
  const [error, setError] = useState<Error>()
  if (!available)
    return html`<${Card} title="SFTP users"><${NotAvailable} feature="Managing SFTP users in the page">
      <p>SFTP users are managed on the server with the CLI:</p>
      <${CodeBlock} text=${'npx sluice sftp add-user acme --password\nnpx sluice sftp list\nnpx sluice sftp remove acme'} />
    </${NotAvailable}></${Card}>`
  const create = async (e: Event) => {
    e.preventDefault()
    setFieldErrors([])
    setError(undefined)
    // One key a line, as in an authorized_keys file.
    const publicKeys = keys
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l && !l.startsWith('#'))
    try {
      const user = await api<SftpUserView>('POST', '/sftp-users', { username: username.trim(), ...(password && { password }), public_keys: publicKeys })
      setUsername('')
      setPassword('')
      setKeys('')
      props.onToast(`Added SFTP user ${user.username}`)
      users.reload()
    } catch (err) {
      const placed = err instanceof ApiError ? err.errors.filter((f) => SFTP_FIELDS.includes(fieldOf(f.pointer))) : []
      setFieldErrors(placed)
      if (placed.length === 0 || (err as ApiError).errors.length > placed.length) setError(err as Error)
    }
  }
  const remove = async (user: SftpUserView) => {
    if (!confirm(`Remove the SFTP user ${user.username}? It can no longer log in; its folder and the files in it stay on the server.`)) return
    try {
      await api('DELETE', `/sftp-users/${encodeURIComponent(user.username)}`)
      props.onToast(`Removed SFTP user ${user.username}`)
      users.reload()
    } catch (err) {
      setError(err as Error)
    }
  }
  const errorsAt = (field: string) =>
    fieldErrors
      .filter((f) => fieldOf(f.pointer) === field)
      .map((f) => {
        const line = field === 'public_keys' ? Number(f.pointer.split('/').pop()) : Number.NaN
        return html`<div class="field-error" role="alert">${Number.isInteger(line) ? `Key ${line + 1}: ` : ''}${f.message}</div>`
      })
  /** A field's errors when it has any, else the hint saying what it takes. */
  const below = (field: string, hint: string) => {
    const errors = errorsAt(field)
    return errors.length > 0 ? errors : html`<span class="hint">${hint}</span>`
  }
  const invalid = (field: string) => (fieldErrors.some((f) => fieldOf(f.pointer) === field) ? 'invalid' : '')
  return html`<${Card} title="SFTP users" testid="sftp-users">
    <p class="muted small">Partners log in with any SFTP client (the <code>files</code> role, port <code>files.sftpPort</code>, 2222 by default), each
      in a folder of its own with a folder per object: a file put in <code>/transaction</code> becomes a batch job.</p>
    <form class="form-grid sftp-form" onSubmit=${create} data-testid="sftp-user-form">
      <label>User name
        <input type="text" class=${invalid('username')} value=${username} onInput=${(e: Event) => setUsername((e.target as HTMLInputElement).value)}
          placeholder="acme" autocomplete="off" data-testid="sftp-username" />
        ${below('username', "lowercase letters, digits, _ and -; also its folder's name")}</label>
      <label>Password
        <input type="password" class=${invalid('password')} value=${password} onInput=${(e: Event) => setPassword((e.target as HTMLInputElement).value)}
          autocomplete="new-password" data-testid="sftp-password" />
        ${below('password', 'at least 10 characters; leave empty for key-only')}</label>
      <label>Public keys
        <textarea rows="2" class=${`mono ${invalid('public_keys')}`} value=${keys} onInput=${(e: Event) => setKeys((e.target as HTMLTextAreaElement).value)}
          placeholder="ssh-ed25519 AAAA… user@host" spellcheck=${false} data-testid="sftp-keys"></textarea>
        ${below('public_keys', 'OpenSSH public keys, one a line')}</label>
      <div class="wide"><button class="btn primary small" type="submit" disabled=${!username.trim()} data-testid="create-sftp-user">Add SFTP user</button></div>
    </form>
    ${error && html`<${ErrorBox} error=${error} />`}
    ${users.error && html`<${ErrorBox} error=${users.error} onRetry=${users.reload} />`}
    ${
      !users.data
        ? !users.error && html`<${Loading} />`
        : users.data.users.length === 0
          ? html`<p class="muted" data-testid="sftp-users-empty">No SFTP users yet.</p>`
          : html`<table class="data" data-testid="sftp-users-table">
            <thead><tr><th>User</th><th>Logs in by</th><th>Keys</th><th>Added</th><th></th></tr></thead>
            <tbody>${users.data.users.map(
              (u) => html`<tr key=${u.username} data-sftp-user=${u.username}>
                <td><b>${u.username}</b></td>
                <td>${[u.password && 'password', u.public_keys.length > 0 && 'key'].filter(Boolean).join(' or ')}</td>
                <td>${u.public_keys.length === 0 ? html`<span class="muted">—</span>` : u.public_keys.map((k) => html`<div class="mono small" title=${k}>${keyLabel(k)}</div>`)}</td>
                <td title=${u.created_at}>${formatTime(u.created_at)}</td>
                <td><button class="btn small danger" onClick=${() => remove(u)} data-testid="remove-sftp-user">Remove</button></td>
              </tr>`,
            )}</tbody></table>`
    }
  </${Card}>`
}

export function AccessPage() {
  const { key } = useSigned()
  const [toast, showToast] = useToast()
  if (!isAdmin(key)) return html`<${NeedsAdmin} what="Access management" />`
  return html`<div class="stack">
    <${ApiKeys} onToast=${showToast} />
    <${UploadLinks} onToast=${showToast} />
    <${SftpUsers} onToast=${showToast} />
    ${toast}
  </div>`
}
