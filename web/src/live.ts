import { useEffect, useRef, useState } from 'preact/hooks'
import type { Alert, LiveRecord, LiveTick, ObjectStats } from './types.ts'

export type LiveStatus = 'connecting' | 'live' | 'reconnecting'

/** What `GET /events` sends (docs/dashboard.md), plus the connection's own status changes. */
interface LiveEvents {
  hello: { objects: string[]; history: LiveTick[] }
  tick: { tick: LiveTick }
  stats: { objects: ObjectStats[] }
  stats_error: { message: string }
  record: { record: LiveRecord }
  alert: { alert: Alert }
  schema: { object: string; version: number }
  signed_out: Record<string, never>
  status: { status: LiveStatus }
}
type LiveEventName = keyof LiveEvents

const HISTORY_SECONDS = 900
const RECENT_RECORDS = 50
const RECENT_ALERTS = 200

/**
 * The one event stream of a signed-in dashboard, shared by every page. It keeps what pages need when they
 * open later: the per-second history for the charts, the latest stats, records and alerts.
 */
class LiveConnection {
  status: LiveStatus = 'connecting'
  history: LiveTick[] = []
  stats: ObjectStats[] | undefined
  statsError: string | undefined
  recentRecords: LiveRecord[] = []
  recentAlerts: Alert[] = []
  #source: EventSource | undefined
  readonly #listeners = new Map<LiveEventName, Set<(data: never) => void>>()

  connect(): void {
    this.close()
    const source = new EventSource('/events')
    this.#source = source
    this.#setStatus('connecting')
    source.onopen = () => this.#setStatus('live')
    // EventSource reconnects by itself (the server asks for 2 s); the page only says so meanwhile.
    source.onerror = () => this.#setStatus('reconnecting')
    const on = <K extends LiveEventName>(name: K, apply?: (data: LiveEvents[K]) => void) =>
      source.addEventListener(name, (e) => {
        const data = JSON.parse((e as MessageEvent<string>).data) as LiveEvents[K]
        apply?.(data)
        this.#emit(name, data)
      })
    on('hello', (d) => {
      this.history = d.history
    })
    on('tick', (d) => {
      this.history.push(d.tick)
      if (this.history.length > HISTORY_SECONDS) this.history.shift()
    })
    on('stats', (d) => {
      this.stats = d.objects
      this.statsError = undefined
    })
    on('stats_error', (d) => {
      this.statsError = d.message
    })
    on('record', (d) => {
      this.recentRecords.unshift(d.record)
      if (this.recentRecords.length > RECENT_RECORDS) this.recentRecords.pop()
    })
    on('alert', (d) => {
      this.recentAlerts.unshift(d.alert)
      if (this.recentAlerts.length > RECENT_ALERTS) this.recentAlerts.pop()
    })
    on('schema')
    on('signed_out', () => this.close())
  }

  close(): void {
    this.#source?.close()
    this.#source = undefined
    this.history = []
    this.stats = undefined
    this.recentRecords = []
    this.recentAlerts = []
  }

  on<K extends LiveEventName>(name: K, listener: (data: LiveEvents[K]) => void): () => void {
    let set = this.#listeners.get(name)
    if (!set) this.#listeners.set(name, (set = new Set()))
    set.add(listener as (data: never) => void)
    return () => set.delete(listener as (data: never) => void)
  }

  #emit<K extends LiveEventName>(name: K, data: LiveEvents[K]): void {
    for (const listener of this.#listeners.get(name) ?? []) (listener as (d: LiveEvents[K]) => void)(data)
  }

  #setStatus(status: LiveStatus): void {
    this.status = status
    this.#emit('status', { status })
  }
}

export const live = new LiveConnection()

/** Calls `handler` on every `name` event while the component is mounted (always the latest handler). */
export function useLiveEvent<K extends LiveEventName>(name: K, handler: (data: LiveEvents[K]) => void): void {
  const latest = useRef(handler)
  latest.current = handler
  useEffect(() => live.on(name, (data) => latest.current(data)), [name])
}

/** Re-renders the component on each of these events, for views drawn from `live`'s state. */
export function useLiveRefresh(...names: LiveEventName[]): void {
  const [, setCount] = useState(0)
  useEffect(() => {
    const offs = names.map((name) => live.on(name, () => setCount((c) => c + 1)))
    // What happened between the render and this subscription (the stream opening, say) is drawn now.
    setCount((c) => c + 1)
    return () => {
      for (const off of offs) off()
    }
  }, [names.join()])
}
