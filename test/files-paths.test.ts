import t from 'tap'
import { describeDroppedFile } from '../pipeline/files/index.ts'

const OBJECTS = ['account', 'activity', 'card', 'card_event', 'transaction']

t.test("a dropped file's object, format and force flag come from its path (docs/files.md)", async (t) => {
  const cases: [path: string, expected: Record<string, unknown>][] = [
    ['transaction/anything.csv', { object: 'transaction', format: { format: 'csv', compressed: false }, force: false }],
    ['transaction/2026/11/export.ndjson.gz', { object: 'transaction', format: { format: 'ndjson', compressed: true } }],
    ['transaction/account_export.csv', { object: 'transaction' }], // the folder wins over the name
    ['transaction_2026-11-23.csv', { object: 'transaction' }],
    ['account-export.jsonl', { object: 'account', format: { format: 'ndjson', compressed: false } }],
    ['activity.json', { object: 'activity', format: { format: 'json', compressed: false } }],
    ['Transaction_UPPER.CSV', { object: 'transaction', format: { format: 'csv', compressed: false } }],
    ['card_event_1.csv', { object: 'card_event' }], // the longest object name that fits
    ['card-1.csv', { object: 'card' }],
    ['cards.csv', { object: null }], // a prefix must end at _, - or .
    ['transactions/x.csv', { object: null }], // not an object's folder, and not the name either
    ['incoming/transaction_x.csv', { object: 'transaction' }], // an unknown folder: the name decides
    ['export.json', { object: null, format: { format: 'json', compressed: false } }], // a JSON envelope may name it
    ['transaction/x.csv.force', { object: 'transaction', name: 'x.csv', force: true, format: { format: 'csv', compressed: false } }],
    ['transaction/notes.txt', { object: 'transaction', format: undefined }],
    ['transaction/x.csv.zip', { format: undefined }],
  ]
  for (const [path, expected] of cases) t.match(describeDroppedFile(path, OBJECTS), expected, path)
})
