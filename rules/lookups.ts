/** The object whose latest record per account is `account` in expressions. */
export const ACCOUNT_OBJECT = 'account'
/** The object whose records make up `activity` in expressions, keyed by their `event_type`. */
export const ACTIVITY_OBJECT = 'activity'
/** The field that ties a record to its account: also what the record subjects are partitioned by. */
export const ACCOUNT_KEY = 'account_id'
const ACTIVITY_TYPE_FIELD = 'event_type'
const MINUTE_MS = 60_000

interface Versioned {
  time: number
  seq: number
  record: Record<string, unknown>
}

/** An activity as expressions see it: the record and `minutes_ago`, set for the record being evaluated. */
interface ActivityEntry extends Versioned {
  view: Record<string, unknown> & { minutes_ago: number }
}

const newer = (a: Versioned, b: Versioned) => a.time > b.time || (a.time === b.time && a.seq > b.seq)

/**
 * What the stage knows about each account beyond the record in hand: the latest `account` record, and per
 * activity type the account's activity in the lookup window. Lookups describe what came before a record: the
 * stage reads them before it adds the record itself.
 */
export class AccountLookups {
  readonly #accounts = new Map<string, Versioned>()
  /** Per account, per event type, oldest first. */
  readonly #activity = new Map<string, Map<string, ActivityEntry[]>>()
  readonly #windowMs: number
  readonly #lateMs: number

  /** `windowMs`: how far back activity counts; `lateMs`: how late a record may arrive and still see it. */
  constructor(windowMs: number, lateMs: number) {
    this.#windowMs = windowMs
    this.#lateMs = lateMs
  }

  /** The lookup window over activity (0 for other objects): how far back a rebuild must read them. */
  spanOf(object: string): number {
    return object === ACTIVITY_OBJECT ? this.#windowMs : 0
  }

  add(object: string, record: Record<string, unknown>, time: number, seq: number): void {
    const account = record[ACCOUNT_KEY]
    if (typeof account !== 'string') return
    if (object === ACCOUNT_OBJECT) {
      const entry = { time, seq, record }
      const known = this.#accounts.get(account)
      if (!known || newer(entry, known)) this.#accounts.set(account, entry)
      return
    }
    if (object !== ACTIVITY_OBJECT) return
    const type = record[ACTIVITY_TYPE_FIELD]
    if (typeof type !== 'string') return
    let byType = this.#activity.get(account)
    if (!byType) this.#activity.set(account, (byType = new Map()))
    let list = byType.get(type)
    if (!list) byType.set(type, (list = []))
    const entry: ActivityEntry = { time, seq, record, view: { ...record, minutes_ago: 0 } }
    let at = list.length
    while (at > 0 && newer(list[at - 1], entry)) at--
    list.splice(at, 0, entry)
    const horizon = list[list.length - 1].time - this.#windowMs - this.#lateMs
    while (list.length > 0 && list[0].time < horizon) list.shift()
  }

  /** The latest known `account` record of the account, or {} when none is known. */
  account(accountId: unknown): Record<string, unknown> {
    return (typeof accountId === 'string' && this.#accounts.get(accountId)?.record) || {}
  }

  /**
   * Per event type, the account's latest activity at or before `time` and inside the window, with
   * `minutes_ago` (from that activity to `time`). The views are reused and only valid until the next call:
   * an expression context lives for one evaluation.
   */
  activity(accountId: unknown, time: number): Record<string, Record<string, unknown>> {
    const out: Record<string, Record<string, unknown>> = {}
    const byType = typeof accountId === 'string' ? this.#activity.get(accountId) : undefined
    if (!byType) return out
    for (const [type, list] of byType) {
      for (let i = list.length - 1; i >= 0; i--) {
        const entry = list[i]
        if (entry.time > time) continue
        if (entry.time > time - this.#windowMs) {
          entry.view.minutes_ago = (time - entry.time) / MINUTE_MS
          out[type] = entry.view
        }
        break
      }
    }
    return out
  }
}
