import t from 'tap'
import { JsonPayloadError, JsonRecordSplitter, type PayloadSettings } from '../pipeline/batch/json-records.ts'

/** Every record's value, and the settings, from `text` pushed in the given pieces. */
function split(pieces: string[]): { records: unknown[]; settings: PayloadSettings } {
  const settings: PayloadSettings = {}
  const splitter = new JsonRecordSplitter(settings)
  const records = pieces.flatMap((piece) => splitter.push(piece)).map((text) => JSON.parse(text))
  splitter.end()
  return { records, settings }
}

const tricky = [
  { id: 'a', description: 'brackets ] } [ { and "quotes", a comma, and a backslash \\', n: -1.5e3, ok: true, none: null },
  { id: 'b', nested: { list: [1, [2, { deep: '}]' }], {}], empty: '' }, unicode: 'é ✓ \u2028 😀', escaped: '\\"\\\\' },
  { id: 'c' },
]

t.test('a JSON array splits into its records wherever the text is cut', async (t) => {
  const text = `\uFEFF \n${JSON.stringify(tricky, null, 2)}\n`
  for (let cut = 0; cut <= text.length; cut++) {
    const { records } = split([text.slice(0, cut), text.slice(cut)])
    if (JSON.stringify(records) !== JSON.stringify(tricky)) t.fail(`cut at ${cut}: ${JSON.stringify(records)}`)
  }
  t.same(split([text]).records, tricky, 'every record, exactly')
  t.same(split(text.split('')).records, tricky, 'one character at a time')
})

t.test('an envelope gives its records and settings, in any order of its members', async (t) => {
  const envelope = JSON.stringify({ evaluate_rules: false, records: tricky, note: { records: ['not these'] }, object: 'transaction', update_schema: true })
  for (let cut = 0; cut <= envelope.length; cut += 7) {
    const { records, settings } = split([envelope.slice(0, cut), envelope.slice(cut)])
    if (JSON.stringify(records) !== JSON.stringify(tricky)) t.fail(`cut at ${cut}`)
    if (JSON.stringify(settings) !== JSON.stringify({ evaluate_rules: false, object: 'transaction', update_schema: true })) t.fail(`settings, cut at ${cut}`)
  }
  t.same(split(['{"records": [], "object": "account"}']), { records: [], settings: { object: 'account' } }, 'an empty records array')
  t.same(split(['[1, "two", null]']).records, [1, 'two', null], 'values that are not objects are records too: validation refuses them')
})

t.test('a broken structure is an error that says what was expected', async (t) => {
  const cases: [string, RegExp][] = [
    ['"just a string"', /must be an array of records or an object/],
    ['[{"a": 1} {"b": 2}]', /expected a comma or the end of the records array, found "\{"/],
    ['[{"a": 1}] x', /expected nothing more/],
    ['[{"a": 1},]', /expected a value/],
    ['{"records" [1]}', /expected a colon/],
    ['{"records": [1] "object": "x"}', /expected a comma or the end of the object/],
    ['[{"a": 1}, {"b": ', /ends before the payload is complete/],
    ['[{"a": "unterminated}]', /ends before the payload is complete/],
  ]
  for (const [text, message] of cases) t.throws(() => split([text]), message, text)
  try {
    split(['[1,2'])
    t.fail('a payload cut short throws')
  } catch (err) {
    t.ok(err instanceof JsonPayloadError, 'the error is typed')
  }
})
