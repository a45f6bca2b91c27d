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

/**
 * The records of one object that share one group value (an account, a device...), in (time, seq) order, and
 * each feature's running aggregate over them. Positions are absolute (index + `removed`), so evicting from the
 * front does not move what an aggregate counted; an insert before the end does, and bumps `reordered`.
 *
 * Kept column by column (times, sequences, one array per field read), not as an object per record: a window
 * holds every record of its span (30 days of an account), and an object per record with its own values object
 * and boxed numbers took about 140 bytes each of the rule thread's heap, and as many objects to mark.
 */
class Group {
  readonly times: number[] = []
  readonly seqs: number[] = []
  /** The values of each field the series reads, by field name, at the same indices. */
  readonly columns = new Map<string, unknown[]>()
  removed = 0
  reordered = 0
  readonly aggregates = new Map<string, RunningAggregate>()

  constructor(fields: Iterable<string>) {
    for (const field of fields) this.columns.set(field, [])
  }

  get length(): number {
    return this.times.length
  }

  /** The values of `field`, by index (a field no feature of the series reads has none). */
  column(field: string): unknown[] {
    return this.columns.get(field) as unknown[]
  }

  /** Puts a record at `index`, each field's value taken from `read`. */
  insert(index: number, time: number, seq: number, read: (field: string) => unknown): void {
    if (index === this.times.length) {
      this.times.push(time)
      this.seqs.push(seq)
      for (const [field, values] of this.columns) values.push(read(field))
      return
    }
    this.times.splice(index, 0, time)
    this.seqs.splice(index, 0, seq)
    for (const [field, values] of this.columns) values.splice(index, 0, read(field))
  }

  /** Drops the records with a time before `time` from the front. */
  evictBefore(time: number): void {
    const { times } = this
    let n = 0
    while (n < times.length && times[n] < time) n++
    if (n === 0) return
    times.splice(0, n)
    this.seqs.splice(0, n)
    for (const values of this.columns.values()) values.splice(0, n)
    this.removed += n
  }
}

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
/** Features with the same aggregate, field, window and exclusion read the same running state. */
const aggregateKey = (f: FeatureDefinition) => `${f.aggregate}\u0000${f.field ?? ''}\u0000${f.windowMs}\u0000${f.exclude_current === true}`

/** First index whose record is after (time, seq) in (time, seq) order. */
function upperBound(group: Group, time: number, seq: number): number {
  const { times, seqs } = group
  let lo = 0
  let hi = times.length
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (times[mid] < time || (times[mid] === time && seqs[mid] <= seq)) lo = mid + 1
    else hi = mid
  }
  return lo
}

/** First index whose record's time is after `time`. */
function firstAfter(group: Group, time: number): number {
  return upperBound(group, time, Number.POSITIVE_INFINITY)
}

/**
 * Sums are kept in ten-thousandths as integers when every value allows it (amounts do), so adding and removing
 * values as the window slides gives exactly what summing the window afresh gives, whatever the order: a float
 * running sum would drift, and a restarted stage would decide differently from one that never stopped.
 */
const SUM_SCALE = 10_000

function sumUnits(value: number): number | undefined {
  const units = Math.round(value * SUM_SCALE)
  return Number.isSafeInteger(units) && units / SUM_SCALE === value ? units : undefined
}

/** Values in window order with the smallest (or largest) kept at the head: the window's minimum (maximum) in O(1). */
class MonotonicQueue {
  readonly #positions: number[] = []
  readonly #values: number[] = []
  #head = 0

  constructor(readonly keeps: (kept: number, incoming: number) => boolean) {}

  push(position: number, value: number): void {
    while (this.#values.length > this.#head && !this.keeps(this.#values[this.#values.length - 1], value)) {
      this.#values.pop()
      this.#positions.pop()
    }
    this.#positions.push(position)
    this.#values.push(value)
  }

  /** Drops what lies before `position`. */
  dropBefore(position: number): void {
    while (this.#head < this.#positions.length && this.#positions[this.#head] < position) this.#head++
    // Compact now and then, so the arrays do not grow with every value ever pushed.
    if (this.#head > 1024 && this.#head * 2 > this.#positions.length) {
      this.#positions.splice(0, this.#head)
      this.#values.splice(0, this.#head)
      this.#head = 0
    }
  }

  head(): number | undefined {
    return this.#head < this.#values.length ? this.#values[this.#head] : undefined
  }
}

/**
 * One feature's aggregate over a group's records at absolute positions [from, to), moved forward as records
 * arrive in order: each entry is added once and removed once, instead of the whole window being read for
 * every record (quadratic for an account with many records in its window).
 */
class RunningAggregate {
  from = 0
  to = 0
  reordered = -1
  /** Values present (not null): what count and avg count. */
  present = 0
  /** Sum of the numbers, in SUM_SCALE units; `inexact` numbers in the window do not fit that, nor does an overflow. */
  units = 0
  inexact = 0
  readonly min = new MonotonicQueue((kept, incoming) => kept < incoming)
  readonly max = new MonotonicQueue((kept, incoming) => kept > incoming)
  readonly distinct = new Map<unknown, number>()

  constructor(readonly feature: FeatureDefinition) {}

  /** Moves the window to [from, to) (absolute positions), starting afresh when it cannot get there by moving forward. */
  moveTo(group: Group, from: number, to: number): void {
    if (this.reordered !== group.reordered || from < this.from || to < this.to || from > this.to || this.from < group.removed) this.#reset(group, from)
    // A count of records (no field) keeps no running state: aggregate() answers it from positions.
    const values = group.column(this.feature.field as string)
    for (; this.from < from; this.from++) this.#remove(values[this.from - group.removed])
    for (; this.to < to; this.to++) this.#add(this.to, values[this.to - group.removed])
    this.min.dropBefore(from)
    this.max.dropBefore(from)
  }

  #reset(group: Group, at: number): void {
    Object.assign(this, { from: at, to: at, reordered: group.reordered, present: 0, units: 0, inexact: 0 })
    this.min.dropBefore(Number.POSITIVE_INFINITY)
    this.max.dropBefore(Number.POSITIVE_INFINITY)
    this.distinct.clear()
  }

  #add(position: number, value: unknown): void {
    if (value === null || value === undefined) return
    this.present++
    const op = this.feature.aggregate
    if (op === 'distinct_count') this.distinct.set(value, (this.distinct.get(value) ?? 0) + 1)
    if (typeof value !== 'number') return
    if (op === 'min') this.min.push(position, value)
    else if (op === 'max') this.max.push(position, value)
    else if (op === 'sum' || op === 'avg') {
      const units = sumUnits(value)
      if (units === undefined) this.inexact++
      else this.units += units
    }
  }

  #remove(value: unknown): void {
    if (value === null || value === undefined) return
    this.present--
    const op = this.feature.aggregate
    if (op === 'distinct_count') {
      const left = (this.distinct.get(value) as number) - 1
      if (left === 0) this.distinct.delete(value)
      else this.distinct.set(value, left)
    }
    if (typeof value !== 'number' || (op !== 'sum' && op !== 'avg')) return
    const units = sumUnits(value)
    if (units === undefined) this.inexact--
    else this.units -= units
  }

  /** The sum of the numbers in the window: exact in units, else summed afresh in window order. */
  sum(group: Group): number {
    if (this.inexact === 0 && Number.isSafeInteger(this.units)) return this.units / SUM_SCALE
    const values = group.column(this.feature.field as string)
    let sum = 0
    for (let i = this.from; i < this.to; i++) {
      const value = values[i - group.removed]
      if (typeof value === 'number') sum += value
    }
    return sum
  }
}

/**
 * The feature's value over records [from, to) of the group (indices), without the one with `excludeSeq`.
 * The excluded record is the one just added, normally the window's last entry: the running aggregate then
 * covers the window without it, and takes it in on the next record. Anywhere else (it arrived late), the
 * window is read afresh.
 */
function aggregate(feature: FeatureDefinition, group: Group | undefined, from: number, to: number, excludeSeq: number | undefined): number | undefined {
  const { aggregate: op, field } = feature
  // The record itself, when excluded, is in the window: it was added just before, at the window's end.
  if (op === 'count' && field === undefined) return to - from - (excludeSeq === undefined ? 0 : 1)
  if (!group) return op === 'count' || op === 'distinct_count' || op === 'sum' ? 0 : undefined
  const key = aggregateKey(feature)
  let running = group.aggregates.get(key)
  if (!running) group.aggregates.set(key, (running = new RunningAggregate(feature)))
  const excludedLast = excludeSeq !== undefined && to > from && group.seqs[to - 1] === excludeSeq
  if (excludeSeq !== undefined && !excludedLast) return scanWindow(feature, group, from, to, excludeSeq)
  running.moveTo(group, from + group.removed, to - (excludedLast ? 1 : 0) + group.removed)
  switch (op) {
    case 'distinct_count':
      return running.distinct.size
    case 'count':
      return running.present
    case 'sum':
      return running.sum(group)
    case 'avg':
      return running.present === 0 ? undefined : running.sum(group) / running.present
    case 'min':
      return running.min.head()
    case 'max':
      return running.max.head()
  }
}

/** The feature's value read from every record of the window: for a record that arrived out of order. */
function scanWindow(feature: FeatureDefinition, group: Group, from: number, to: number, excludeSeq: number): number | undefined {
  const window = new Group(group.columns.keys())
  for (let i = from; i < to; i++) {
    if (group.seqs[i] !== excludeSeq) window.insert(window.length, group.times[i], group.seqs[i], (field) => group.column(field)[i])
  }
  return aggregate(feature, window, 0, window.length, undefined)
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
      if (!group) series.groups.set(groupKey, (group = new Group(series.fields)))
      const at = upperBound(group, time, seq)
      if (at < group.length) group.reordered++
      group.insert(at, time, seq, (field) => record[field])
      group.evictBefore(group.times[group.length - 1] - series.spanMs - this.#lateMs)
    }
    // Groups that stop receiving records are swept now and then, so an idle account's window does not stay forever.
    if (++this.#added % 10_000 === 0) this.#sweep(time)
  }

  #sweep(newest: number): void {
    for (const series of this.#series.values()) {
      const horizon = newest - series.spanMs - this.#lateMs
      for (const [key, group] of series.groups) {
        group.evictBefore(horizon)
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
      const value = aggregate(f, group, from, to, excludeSeq)
      if (value !== undefined) out[f.name] = value
    }
    return out
  }
}
