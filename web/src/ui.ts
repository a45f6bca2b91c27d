import { html } from 'htm/preact'
import type { ComponentChildren } from 'preact'
import { useCallback, useEffect, useRef, useState } from 'preact/hooks'
import { ApiError, api } from './api.ts'

// ---- formatting -------------------------------------------------------------------------------------------

const numberFormat = new Intl.NumberFormat()
const rateFormat = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 })

export const formatNumber = (n: number | null | undefined) => (n === null || n === undefined ? '—' : numberFormat.format(n))
export const formatRate = (perSecond: number) => `${rateFormat.format(perSecond)}/s`

export function formatBytes(bytes: number): string {
  const units = ['B', 'KB', 'MB', 'GB', 'TB']
  let value = bytes
  let unit = 0
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024
    unit++
  }
  return `${rateFormat.format(value)} ${units[unit]}`
}

export function formatDuration(ms: number | null | undefined): string {
  if (ms === null || ms === undefined) return '—'
  if (ms < 1000) return `${Math.round(ms)} ms`
  if (ms < 60_000) return `${rateFormat.format(ms / 1000)} s`
  if (ms < 3_600_000) return `${Math.floor(ms / 60_000)} min ${Math.round((ms % 60_000) / 1000)} s`
  return `${Math.floor(ms / 3_600_000)} h ${Math.round((ms % 3_600_000) / 60_000)} min`
}

/** Local time; the date too when it is not today. */
export function formatTime(iso: string | null | undefined): string {
  if (!iso) return '—'
  const d = new Date(iso)
  const today = new Date().toDateString() === d.toDateString()
  return today ? d.toLocaleTimeString() : d.toLocaleString()
}

export function timeAgo(iso: string | null | undefined, now = Date.now()): string {
  if (!iso) return 'never'
  const seconds = Math.round((now - Date.parse(iso)) / 1000)
  if (seconds < 5) return 'just now'
  if (seconds < 60) return `${seconds} s ago`
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`
  if (seconds < 86_400) return `${Math.floor(seconds / 3600)} h ago`
  return `${Math.floor(seconds / 86_400)} d ago`
}

// ---- data -------------------------------------------------------------------------------------------------

export interface Loaded<T> {
  data: T | undefined
  error: ApiError | undefined
  loading: boolean
  reload: () => void
}

/**
 * GETs `path` (null: nothing yet) and again every `everyMs` when given. Data from the last success stays shown
 * while a refresh runs or fails, so a page never flashes empty; the error is shown beside it.
 */
export function useApi<T>(path: string | null, everyMs?: number): Loaded<T> {
  const [state, setState] = useState<{ path: string | null; data?: T; error?: ApiError; loading: boolean }>({ path, loading: path !== null })
  const [generation, setGeneration] = useState(0)
  const reload = useCallback(() => setGeneration((g) => g + 1), [])
  useEffect(() => {
    if (path === null) return
    let active = true
    let inFlight = false
    setState((s) => (s.path === path ? { ...s, loading: true } : { path, loading: true }))
    const load = () => {
      if (inFlight) return
      inFlight = true
      api<T>('GET', path)
        .then(
          (data) => active && setState({ path, data, loading: false }),
          (error: ApiError) => active && setState((s) => ({ path, data: s.path === path ? s.data : undefined, error, loading: false })),
        )
        .finally(() => (inFlight = false))
    }
    load()
    const timer = everyMs ? setInterval(load, everyMs) : undefined
    return () => {
      active = false
      clearInterval(timer)
    }
  }, [path, everyMs, generation])
  const current = state.path === path
  return { data: current ? state.data : undefined, error: current ? state.error : undefined, loading: !current || state.loading, reload }
}

/** A list read newest first, page by page: its rows (which live events may add to), the next page's cursor, and how loading went. */
export interface CursorPages<T> {
  rows: T[]
  setRows: (update: (rows: T[]) => T[]) => void
  cursor: string | undefined
  status: { loading: boolean; error?: ApiError }
  loadOlder: () => void
}

/**
 * GETs the first page of `query` (null: nothing yet) whenever it changes, and the next one on loadOlder, following
 * `next_cursor`. A page answered after the query changed is dropped.
 */
export function useCursorPages<T, P extends { next_cursor?: string }>(query: string | null, rowsOf: (page: P) => T[]): CursorPages<T> {
  const [rows, setRows] = useState<T[]>([])
  const [cursor, setCursor] = useState<string>()
  const [status, setStatus] = useState<{ loading: boolean; error?: ApiError }>({ loading: true })
  useEffect(() => {
    if (query === null) return
    let active = true
    setRows([])
    setCursor(undefined)
    setStatus({ loading: true })
    api<P>('GET', query).then(
      (page) => {
        if (!active) return
        setRows(rowsOf(page))
        setCursor(page.next_cursor)
        setStatus({ loading: false })
      },
      (error: ApiError) => active && setStatus({ loading: false, error }),
    )
    return () => {
      active = false
    }
  }, [query])
  const loadOlder = () => {
    if (!cursor || query === null) return
    setStatus({ loading: true })
    api<P>('GET', `${query}&cursor=${cursor}`).then(
      (page) => {
        setRows((current) => [...current, ...rowsOf(page)])
        setCursor(page.next_cursor)
        setStatus({ loading: false })
      },
      (error: ApiError) => setStatus({ loading: false, error }),
    )
  }
  return { rows, setRows, cursor, status, loadOlder }
}

/** The current time, refreshed every `everyMs`: for "5 s ago" labels that must stay true. */
export function useNow(everyMs = 5000): number {
  const [now, setNow] = useState(Date.now())
  useEffect(() => {
    const timer = setInterval(() => setNow(Date.now()), everyMs)
    return () => clearInterval(timer)
  }, [everyMs])
  return now
}

// ---- components -------------------------------------------------------------------------------------------

export function Card(props: { title?: ComponentChildren; actions?: ComponentChildren; class?: string; children?: ComponentChildren; testid?: string }) {
  return html`<section class=${`card ${props.class ?? ''}`} data-testid=${props.testid}>
    ${(props.title || props.actions) && html`<header class="card-head"><h2>${props.title}</h2><div class="card-actions">${props.actions}</div></header>`}
    ${props.children}
  </section>`
}

export function Stat(props: { label: string; value: ComponentChildren; sub?: ComponentChildren; tone?: 'ok' | 'warn' | 'bad'; testid?: string }) {
  return html`<div class=${`stat ${props.tone ? `tone-${props.tone}` : ''}`} data-testid=${props.testid}>
    <div class="stat-label">${props.label}</div>
    <div class="stat-value">${props.value}</div>
    ${props.sub && html`<div class="stat-sub">${props.sub}</div>`}
  </div>`
}

export function Loading(props: { label?: string }) {
  return html`<div class="loading" role="status"><span class="spinner"></span>${props.label ?? 'Loading…'}</div>`
}

/** What went wrong, in the server's words, with every field it named. */
export function ErrorBox(props: { error: ApiError | Error; title?: string; onRetry?: () => void }) {
  const { error } = props
  const api = error instanceof ApiError ? error : undefined
  const hint =
    api?.status === 503 && api.code === 'SLUICE_QUERY_UNAVAILABLE'
      ? 'The analytics store did not answer: is a process with the sink role running?'
      : api?.status === 403
        ? 'The key you signed in with lacks the scope this needs.'
        : undefined
  return html`<div class="error-box" role="alert">
    <strong>${props.title ?? 'Something went wrong'}</strong>
    <p>${error.message}${api && api.status > 0 ? html` <span class="muted">(${api.code}, HTTP ${api.status})</span>` : ''}</p>
    ${hint && html`<p class="muted">${hint}</p>`}
    ${api && api.errors.length > 0 && html`<ul>${api.errors.map((e) => html`<li><code>${e.pointer || '/'}</code> ${e.message}</li>`)}</ul>`}
    ${props.onRetry && html`<button class="btn small" onClick=${props.onRetry}>Try again</button>`}
  </div>`
}

export function Empty(props: { title: string; children?: ComponentChildren; testid?: string }) {
  return html`<div class="empty" data-testid=${props.testid}><h3>${props.title}</h3>${props.children}</div>`
}

/** A page or panel whose API this server does not have (yet): says so, and what to use meanwhile. */
export function NotAvailable(props: { feature: string; children?: ComponentChildren }) {
  return html`<div class="notice" data-testid="not-available">
    <strong>${props.feature} is not available in this build</strong>
    <p>This Sluice server has no API for it yet.</p>
    ${props.children}
  </div>`
}

export function NeedsAdmin(props: { what: string }) {
  return html`<div class="notice"><strong>${props.what} needs the admin scope</strong><p>Sign in with an admin key to see and change it.</p></div>`
}

export function ProgressBar(props: { percent: number; secondary?: number; label?: string; tone?: 'ok' | 'warn' | 'bad' }) {
  const pct = Math.max(0, Math.min(100, props.percent))
  return html`<div class=${`progress ${props.tone ? `tone-${props.tone}` : ''}`} role="progressbar" aria-valuenow=${pct} aria-valuemin="0" aria-valuemax="100" aria-label=${props.label}>
    ${props.secondary !== undefined && html`<div class="progress-secondary" style=${{ width: `${Math.min(100, props.secondary)}%` }}></div>`}
    <div class="progress-fill" style=${{ width: `${pct}%` }}></div>
  </div>`
}

export type Tone = 'ok' | 'warn' | 'bad' | 'crit' | 'info' | 'muted'

export function Badge(props: { tone?: Tone; children: ComponentChildren; title?: string }) {
  return html`<span class=${`badge tone-${props.tone ?? 'muted'}`} title=${props.title}>${props.children}</span>`
}

export const SEVERITY_TONE: Record<string, Tone> = { low: 'muted', medium: 'warn', high: 'bad', critical: 'crit' }
export const DECISION_TONE: Record<string, Tone> = { approve: 'ok', review: 'warn', block: 'bad' }

/** A command to copy: shell lines in monospace, with a copy button. */
export function CodeBlock(props: { text: string }) {
  const [copied, setCopied] = useState(false)
  const timer = useRef<ReturnType<typeof setTimeout> | undefined>(undefined)
  const copy = () => {
    navigator.clipboard?.writeText(props.text).then(() => {
      setCopied(true)
      clearTimeout(timer.current)
      timer.current = setTimeout(() => setCopied(false), 1500)
    })
  }
  return html`<div class="code-block"><pre>${props.text}</pre><button class="btn small ghost" onClick=${copy}>${copied ? 'Copied' : 'Copy'}</button></div>`
}

/** A short-lived confirmation ("Saved version 4") in the corner. */
export function useToast(): [ComponentChildren, (message: string) => void] {
  const [message, setMessage] = useState<string>()
  const timer = useRef<ReturnType<typeof setTimeout> | undefined>(undefined)
  const show = useCallback((text: string) => {
    setMessage(text)
    clearTimeout(timer.current)
    timer.current = setTimeout(() => setMessage(undefined), 3000)
  }, [])
  return [message ? html`<div class="toast" role="status">${message}</div>` : null, show]
}
