import { createWriteStream } from 'node:fs'
import { rename } from 'node:fs/promises'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { stringify as csvStringify } from 'csv-stringify'
import type { RowError } from '../../storage/index.ts'

const ERROR_REPORT_COLUMNS = ['row', 'record_key', 'pointer', 'message'] as const

/** The rejected rows of a job as CSV, streamed: a report of a million rows is never held whole. */
export function errorReportCsv(rows: Iterable<RowError>): Readable {
  const csv = csvStringify({ header: true, columns: [...ERROR_REPORT_COLUMNS] })
  return Readable.from(rows)
    .on('error', (err) => csv.destroy(err))
    .pipe(csv)
}

/**
 * Writes the report beside a dropped file (`<name>.errors.csv`), under a temporary name first so that it is
 * never seen half-written; row 0 stands for the file as a whole.
 */
export async function writeErrorReport(path: string, rows: Iterable<RowError>): Promise<void> {
  await pipeline(errorReportCsv(rows), createWriteStream(`${path}.part`))
  await rename(`${path}.part`, path)
}

/** The one-row report of a file that was not ingested at all, saying why. */
export const fileLevelError = (message: string): RowError[] => [{ row: 0, record_key: null, pointer: '', message }]
