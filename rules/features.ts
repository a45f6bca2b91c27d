import type { FeatureSpec } from '../storage/index.ts'

const UNIT_MS = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const

/** `10m` -> 600000. The pattern is checked by the rule set schema. */
export function windowMs(window: string): number {
  return Number(window.slice(0, -1)) * UNIT_MS[window.slice(-1) as keyof typeof UNIT_MS]
}

/** A feature as the stage computes it: its spec with the object resolved and the window in milliseconds. */
export interface FeatureDefinition extends FeatureSpec {
  name: string
  object: string
  windowMs: number
}

/** One record in a window: its own time, its stream sequence, and the field values features aggregate. */
interface WindowEntry {
  time: number
  seq: number
  values: Record<string, unknown>
}

/** The records of one object that share one group value (an account, a device...), in time order. */
type Group = WindowEntry[]

/** Records of one object grouped by one field: what every feature with that object and group_by reads. */
interface Series {
  object: string
  groupBy: string
  fields: Set<string>
  /** The longest window of a feature reading this series. */
  spanMs: number
  groups: Map<string, Group>
}

const seriesKey = (object: string, groupBy: string) => `${object}\u0000${groupBy}`

/** First index whose entry is after (time, seq) in (time, seq) order. */
function upperBound(group: Group, time: number, seq: number): number {
  let lo = 0
  let hi = group.length
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    const e = group[mid]
    if (e.time < time || (e.time === time && e.seq <= seq)) lo = mid + 1
    else hi = mid
  }
  return lo
}

/** First index whose entry's time is after `time`. */
function firstAfter(group: Group, time: number): number {
  return upperBound(group, time, Number.POSITIVE_INFINITY)
}

function aggregate(feature: FeatureDefinition, group: Group, from: number, to: number, excludeSeq: number | undefined): number | undefined {
  const { aggregate: op, field } = feature
  // The record itself, when excluded, is in the window: it was added just before, at the window's end.
  if (op === 'count' && field === undefined) return to - from - (excludeSeq === undefined ? 0 : 1)
  const distinct = op === 'distinct_count' ? new Set<unknown>() : undefined
  let n = 0
  let sum = 0
  let min = Number.POSITIVE_INFINITY
  let max = Number.NEGATIVE_INFINITY
  for (let i = from; i < to; i++) {
    const entry = group[i]
    if (entry.seq === excludeSeq) continue
    const value = entry.values[field as string]
    if (value === null || value === undefined) continue
    if (distinct) {
      distinct.add(value)
      continue
    }
    n++
    if (typeof value !== 'number') continue
    sum += value
    if (value < min) min = value
    if (value > max) max = value
  }
  switch (op) {
    case 'distinct_count':
      return (distinct as Set<unknown>).size
    case 'count':
      return n
    case 'sum':
      return sum
    case 'avg':
      return n === 0 ? undefined : sum / n
    case 'min':
      return n === 0 ? undefined : min
    case 'max':
      return n === 0 ? undefined : max
  }
}

/**
 * Velocity windows over records' own times. Each record is kept in the series its features read, sorted by
 * (time, stream sequence). A feature of a record at time t covers the records of its group with a time in
 * (t - window, t] that reached the stage before it (and the record itself unless `exclude_current`): exact
 * at both edges, and independent of arrival order, so replaying the stream rebuilds the same values.
 */
export class FeatureWindows {
  readonly #series = new Map<string, Series>()
  readonly #byObject = new Map<string, Series[]>()
  /** How far behind the newest time a record may arrive and still find its window complete. */
  readonly #lateMs: number
  #added = 0

  constructor(features: readonly FeatureDefinition[], lateMs: number) {
    this.#lateMs = lateMs
    for (const f of features) {
      const key = seriesKey(f.object, f.group_by)
      let series = this.#series.get(key)
      if (!series) {
        series = { object: f.object, groupBy: f.group_by, fields: new Set(), spanMs: 0, groups: new Map() }
        this.#series.set(key, series)
        this.#byObject.set(f.object, [...(this.#byObject.get(f.object) ?? []), series])
      }
      if (f.field) series.fields.add(f.field)
      series.spanMs = Math.max(series.spanMs, f.windowMs)
    }
  }

  /** The longest window over records of `object` (0: none), which is how far back a rebuild must read them. */
  spanOf(object: string): number {
    return Math.max(0, ...(this.#byObject.get(object) ?? []).map((s) => s.spanMs))
  }

  add(object: string, record: Record<string, unknown>, time: number, seq: number): void {
    for (const series of this.#byObject.get(object) ?? []) {
      const key = record[series.groupBy]
      if (key === null || key === undefined) continue
      const groupKey = String(key)
      let group = series.groups.get(groupKey)
      if (!group) series.groups.set(groupKey, (group = []))
      const values: Record<string, unknown> = {}
      for (const field of series.fields) values[field] = record[field]
      const entry = { time, seq, values }
      const last = group[group.length - 1]
      if (!last || last.time < time || (last.time === time && last.seq < seq)) group.push(entry)
      else group.splice(upperBound(group, time, seq), 0, entry)
      evict(group, group[group.length - 1].time - series.spanMs - this.#lateMs)
    }
    // Groups that stop receiving records are swept now and then, so an idle account's window does not stay forever.
    if (++this.#added % 10_000 === 0) this.#sweep(time)
  }

  #sweep(newest: number): void {
    for (const series of this.#series.values()) {
      const horizon = newest - series.spanMs - this.#lateMs
      for (const [key, group] of series.groups) {
        evict(group, horizon)
        if (group.length === 0) series.groups.delete(key)
      }
    }
  }

  /** The values of `features` for a record at `time` (with stream sequence `seq`); avg, min, max of nothing are left out. */
  compute(features: readonly FeatureDefinition[], record: Record<string, unknown>, object: string, time: number, seq: number): Record<string, number> {
    const out: Record<string, number> = {}
    for (const f of features) {
      const key = record[f.group_by]
      const group = key === null || key === undefined ? undefined : this.#series.get(seriesKey(f.object, f.group_by))?.groups.get(String(key))
      const from = group ? firstAfter(group, time - f.windowMs) : 0
      const to = group ? firstAfter(group, time) : 0
      const excludeSeq = group && f.exclude_current && f.object === object ? seq : undefined
      const value = aggregate(f, group ?? [], from, to, excludeSeq)
      if (value !== undefined) out[f.name] = value
    }
    return out
  }
}

function evict(group: Group, before: number): void {
  let n = 0
  while (n < group.length && group[n].time < before) n++
  if (n > 0) group.splice(0, n)
}
