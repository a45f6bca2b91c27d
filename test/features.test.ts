import t from 'tap'
import { type FeatureDefinition, FeatureWindows } from '../rules/features.ts'

// Velocity features keep running aggregates that slide with the records; this checks them, record by record,
// against the definition read literally: every earlier record of the group in (t - window, t], in any arrival
// order, with ties, late records, nulls and repeated values.

const MINUTE = 60_000
const LATE_MS = 30 * MINUTE

function feature(name: string, spec: Omit<FeatureDefinition, 'name' | 'object' | 'group_by' | 'window' | 'windowMs'> & { minutes: number }): FeatureDefinition {
  const { minutes, ...rest } = spec
  return { name, object: 'transaction', group_by: 'account_id', window: `${minutes}m`, windowMs: minutes * MINUTE, ...rest }
}

const FEATURES: FeatureDefinition[] = [
  feature('n', { aggregate: 'count', minutes: 10 }),
  feature('n_amounts_excl', { aggregate: 'count', field: 'amount', minutes: 10, exclude_current: true }),
  feature('sum', { aggregate: 'sum', field: 'amount', minutes: 10 }),
  feature('sum_excl', { aggregate: 'sum', field: 'amount', minutes: 60, exclude_current: true }),
  feature('avg_excl', { aggregate: 'avg', field: 'amount', minutes: 60, exclude_current: true }),
  feature('min', { aggregate: 'min', field: 'amount', minutes: 10 }),
  feature('max', { aggregate: 'max', field: 'amount', minutes: 60 }),
  feature('max_excl', { aggregate: 'max', field: 'amount', minutes: 10, exclude_current: true }),
  feature('countries', { aggregate: 'distinct_count', field: 'country', minutes: 60 }),
  feature('countries_excl', { aggregate: 'distinct_count', field: 'country', minutes: 10, exclude_current: true }),
]

interface Sent {
  time: number
  seq: number
  record: Record<string, unknown>
}

/** The definition, literally: sums in hundredths, as amounts with two decimals add up exactly. */
function expected(f: FeatureDefinition, sent: readonly Sent[], current: Sent): number | undefined {
  const inWindow = sent.filter(
    (s) =>
      s.record.account_id === current.record.account_id &&
      s.time > current.time - f.windowMs &&
      s.time <= current.time &&
      !(f.exclude_current && s.seq === current.seq),
  )
  if (f.aggregate === 'count' && !f.field) return inWindow.length
  const values = inWindow.map((s) => s.record[f.field as string]).filter((v) => v !== null && v !== undefined)
  const numbers = values.filter((v): v is number => typeof v === 'number')
  const cents = numbers.reduce((sum, v) => sum + Math.round(v * 100), 0)
  switch (f.aggregate) {
    case 'count':
      return values.length
    case 'distinct_count':
      return new Set(values).size
    case 'sum':
      return cents / 100
    case 'avg':
      return values.length === 0 ? undefined : cents / 100 / values.length
    case 'min':
      return numbers.length === 0 ? undefined : Math.min(...numbers)
    case 'max':
      return numbers.length === 0 ? undefined : Math.max(...numbers)
  }
}

/** A seeded stream: a few accounts, times mostly rising with ties and some records up to LATE_MS late. */
function* stream(seed: number, count: number): Generator<Sent> {
  let state = seed
  const random = () => {
    state = (Math.imul(state, 1_103_515_245) + 12_345) >>> 0
    return state / 2 ** 32
  }
  let clock = Date.UTC(2026, 0, 1)
  for (let seq = 1; seq <= count; seq++) {
    clock += Math.floor(random() * 3) * 20_000
    const late = random() < 0.1 ? Math.floor(random() * LATE_MS) : 0
    yield {
      time: clock - late,
      seq,
      record: {
        account_id: `acc-${Math.floor(random() * 3)}`,
        amount: random() < 0.1 ? null : Math.round(random() * 100_000) / 100,
        country: random() < 0.1 ? null : ['DE', 'FR', 'NL'][Math.floor(random() * 3)],
      },
    }
  }
}

t.test('running aggregates equal the window read afresh, record after record', async (t) => {
  for (const seed of [1, 2, 3]) {
    const windows = new FeatureWindows(FEATURES, LATE_MS)
    const sent: Sent[] = []
    let checked = 0
    const wrong: string[] = []
    for (const item of stream(seed, 3000)) {
      windows.add('transaction', item.record, item.time, item.seq)
      sent.push(item)
      const got = windows.compute(FEATURES, item.record, 'transaction', item.time, item.seq)
      for (const f of FEATURES) {
        const want = expected(f, sent, item)
        checked++
        if (got[f.name] !== want && wrong.length < 5) wrong.push(`seq ${item.seq} ${f.name}: got ${got[f.name]}, want ${want}`)
      }
    }
    t.same(wrong, [], `seed ${seed}: all ${checked} feature values as defined`)
  }
})

t.test('a window of thousands of records of one account', async (t) => {
  const windows = new FeatureWindows(FEATURES, LATE_MS)
  let last: Record<string, number> = {}
  for (let seq = 1; seq <= 20_000; seq++) {
    const record = { account_id: 'hot', amount: (seq % 500) + 0.25, country: seq % 7 === 0 ? 'FR' : 'DE' }
    const time = Date.UTC(2026, 0, 1) + seq * 100
    windows.add('transaction', record, time, seq)
    last = windows.compute(FEATURES, record, 'transaction', time, seq)
  }
  t.equal(last.n, 6000, 'the 10-minute window holds 6,000 records')
  t.equal(last.min, 0.25)
  t.equal(last.max, 499.25)
  t.equal(last.countries, 2)
  // Records 14,001..20,000 (the last 10 minutes): amounts (seq % 500) + 0.25, twelve full cycles of 0..499.
  t.equal(last.sum, 12 * (249.5 * 500) + 6000 * 0.25)
})
