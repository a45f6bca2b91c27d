import 'uplot/dist/uPlot.min.css'
import './styles.css'
import { html, render } from 'htm/preact'
import type { ComponentChildren } from 'preact'
import { useCallback, useEffect, useState } from 'preact/hooks'
import { type ApiError, api, RouteIndex, whenUnauthorized } from './api.ts'
import { live, useLiveEvent, useLiveRefresh } from './live.ts'
import { AccessPage } from './pages/access.ts'
import { AlertsPage } from './pages/alerts.ts'
import { JobsPage } from './pages/jobs.ts'
import { OverviewPage } from './pages/overview.ts'
import { RecordsPage } from './pages/records.ts'
import { RulesPage } from './pages/rules.ts'
import { SchemasPage } from './pages/schemas.ts'
import { href, type Route, useRoute } from './router.ts'
import { type Signed, SignedContext } from './session.ts'
import type { KeyInfo, SchemaVersion, Session } from './types.ts'
import { ErrorBox, Loading } from './ui.ts'

interface Page {
  /** First segment of the hash route; '' is the Overview. */
  id: string
  title: string
  icon: string
  view: (props: { route: Route }) => ComponentChildren
}

/** 24x24 stroke icons, drawn here so the page loads nothing from outside. */
const PAGES: Page[] = [
  { id: '', title: 'Overview', icon: 'M4 19V10M10 19V5M16 19v-7M22 19H2', view: OverviewPage },
  { id: 'records', title: 'Records', icon: 'M4 6h16M4 12h16M4 18h16', view: RecordsPage },
  { id: 'schemas', title: 'Schemas', icon: 'M5 4h10l4 4v12H5zM9 12h6M9 16h6', view: SchemasPage },
  { id: 'jobs', title: 'Batch jobs', icon: 'M4 7h16v12H4zM8 7V4h8v3M8 13h8', view: JobsPage },
  { id: 'rules', title: 'Rules', icon: 'M4 6h10M4 12h16M4 18h7M18 4v4M14 16v4', view: RulesPage },
  { id: 'alerts', title: 'Alerts', icon: 'M12 3l9 16H3zM12 10v4M12 17v.5', view: AlertsPage },
  { id: 'access', title: 'Access', icon: 'M8 14a4 4 0 1 1 3-6.6L21 7v4h-3v3h-3l-3.1-1.4A4 4 0 0 1 8 14z', view: AccessPage },
]

function Icon(props: { d: string }) {
  return html`<svg class="icon" viewBox="0 0 24 24" aria-hidden="true"><path d=${props.d} /></svg>`
}

function SignIn(props: { message?: string; onSignedIn: (key: KeyInfo) => void }) {
  const [key, setKey] = useState('')
  const [error, setError] = useState<ApiError>()
  const [busy, setBusy] = useState(false)
  const submit = async (e: Event) => {
    e.preventDefault()
    setBusy(true)
    setError(undefined)
    try {
      const session = await api<Session>('POST', '/session', { key: key.trim() })
      props.onSignedIn(session.key as KeyInfo)
    } catch (err) {
      setError(err as ApiError)
      setBusy(false)
    }
  }
  return html`<main class="signin">
    <form class="signin-card" onSubmit=${submit}>
      <div class="brand large"><${Icon} d="M3 8c4-4 7 4 11 0s6-2 7 0M3 14c4-4 7 4 11 0s6-2 7 0M3 20c4-4 7 4 11 0s6-2 7 0" /> Sluice</div>
      <h1>Sign in</h1>
      ${props.message && html`<p class="notice">${props.message}</p>`}
      <label for="api-key">API key</label>
      <input id="api-key" name="key" type="password" autocomplete="off" placeholder="sk_…" value=${key} onInput=${(e: Event) => setKey((e.target as HTMLInputElement).value)} required autofocus />
      ${error && html`<p class="field-error" role="alert">${error.message}</p>`}
      <button class="btn primary" type="submit" disabled=${busy || !key.trim()}>${busy ? 'Signing in…' : 'Sign in'}</button>
      <p class="muted small">
        Use a key with the <b>read</b> scope (to watch) or <b>admin</b> (to change schemas, rules and keys). The browser keeps a session
        cookie for 12 hours, never the key. Create a read key with <code>npx sluice keys create --name dashboard --scopes read</code>.
      </p>
    </form>
  </main>`
}

function LiveStatusPill() {
  useLiveRefresh('status')
  const label = { connecting: 'Connecting…', live: 'Live', reconnecting: 'Reconnecting…' }[live.status]
  return html`<span class=${`live-pill ${live.status}`} data-testid="live-status" title="Updates stream from the server as they happen"><span class="led"></span>${label}</span>`
}

function Shell(props: { signed: Signed; onSignOut: () => void }) {
  const route = useRoute()
  const page = PAGES.find((p) => p.id === (route.path[0] ?? '')) ?? PAGES[0]
  useEffect(() => {
    document.title = `${page.title} · Sluice`
  }, [page])
  const { key } = props.signed
  return html`<div class="shell">
    <nav class="sidebar">
      <a class="brand" href="#/"><${Icon} d="M3 8c4-4 7 4 11 0s6-2 7 0M3 14c4-4 7 4 11 0s6-2 7 0M3 20c4-4 7 4 11 0s6-2 7 0" /> Sluice</a>
      ${PAGES.map(
        (p) =>
          html`<a href=${href(p.id ? [p.id] : [])} class=${p === page ? 'nav-link active' : 'nav-link'} data-nav=${p.id || 'overview'}><${Icon} d=${p.icon} />${p.title}</a>`,
      )}
    </nav>
    <div class="main">
      <header class="topbar">
        <h1>${page.title}</h1>
        <div class="topbar-right">
          <${LiveStatusPill} />
          <span class="who" title=${`${key.id} · scopes: ${key.scopes.join(', ')}`}>${key.name} <span class="muted">· ${key.scopes.join(', ')}</span></span>
          <button class="btn small" onClick=${props.onSignOut} data-testid="sign-out">Sign out</button>
        </div>
      </header>
      <div class="content"><${page.view} route=${route} /></div>
    </div>
  </div>`
}

type AppState = { phase: 'checking' } | { phase: 'signed-out'; message?: string } | { phase: 'signed-in'; signed: Signed } | { phase: 'failed'; error: Error }

function App() {
  const [state, setState] = useState<AppState>({ phase: 'checking' })

  const signOut = useCallback((message?: string) => {
    live.close()
    setState({ phase: 'signed-out', message })
  }, [])

  const enter = useCallback(async (key: KeyInfo) => {
    try {
      const [routes, schemas] = await Promise.all([RouteIndex.load(), api<{ objects: SchemaVersion[] }>('GET', '/schema')])
      const refreshObjects = () =>
        api<{ objects: SchemaVersion[] }>('GET', '/schema').then((s) =>
          setState((st) => (st.phase === 'signed-in' ? { phase: 'signed-in', signed: { ...st.signed, objects: s.objects.map((o) => o.object) } } : st)),
        )
      live.connect()
      setState({ phase: 'signed-in', signed: { key, routes, objects: schemas.objects.map((o) => o.object), refreshObjects } })
    } catch (error) {
      if ((error as ApiError).status !== 401) setState({ phase: 'failed', error: error as Error })
    }
  }, [])

  useEffect(() => {
    whenUnauthorized(() => signOut('Your session has ended (expired, signed out, or its key was revoked). Sign in again.'))
    api<Session>('GET', '/session').then(
      (session) => (session.signed_in && session.key ? enter(session.key) : setState({ phase: 'signed-out' })),
      (error: Error) => setState({ phase: 'failed', error }),
    )
  }, [])

  useLiveEvent('signed_out', () => signOut('Your session has ended. Sign in again.'))
  useLiveEvent('schema', () => state.phase === 'signed-in' && state.signed.refreshObjects())

  if (state.phase === 'checking') return html`<div class="splash"><${Loading} label="Starting the dashboard…" /></div>`
  if (state.phase === 'failed')
    return html`<div class="splash"><${ErrorBox} error=${state.error} title="The dashboard could not start" onRetry=${() => location.reload()} /></div>`
  if (state.phase === 'signed-out') return html`<${SignIn} message=${state.message} onSignedIn=${enter} />`
  const doSignOut = () => api('DELETE', '/session').finally(() => signOut())
  return html`<${SignedContext.Provider} value=${state.signed}><${Shell} signed=${state.signed} onSignOut=${doSignOut} /></${SignedContext.Provider}>`
}

render(html`<${App} />`, document.getElementById('app') as HTMLElement)
