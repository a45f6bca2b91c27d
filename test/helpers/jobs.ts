import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import type { Test } from 'tap'
import { writeCsv } from '../../fixtures/generate.ts'
import { eventually, type TestSluice, tempDir } from './sluice.ts'

/** `GET /batch-status/:job_id`, the parts the tests read. */
export interface JobStatus {
  job_id: string
  state: string
  object: string | null
  counts: { total: number | null; processed: number; accepted: number; rejected: number; stored: number; evaluated: number }
  progress: { percent: number }
  first_errors: { row: number; record_key: string | null; pointer: string; message: string }[]
  errors_url: string
  error: string | null
}

const FINAL = ['completed', 'completed_with_errors', 'failed', 'cancelled']

/** Polls the job's status until it reaches a final state; that status. */
export async function finished(s: TestSluice, jobId: string, timeoutMs = 20_000): Promise<JobStatus> {
  return eventually(
    async () => {
      const status = (await (await s.request('GET', `/batch-status/${jobId}`)).json()) as JobStatus
      return FINAL.includes(status.state) ? status : undefined
    },
    timeoutMs,
    50,
  )
}

/** Uploads `count` generated transactions as a CSV batch job; its id and how many records the file holds. */
export async function uploadGeneratedCsv(t: Test, s: TestSluice, count: number): Promise<{ jobId: string; records: number }> {
  const csvPath = join(tempDir(t), 'history.csv')
  const records = await writeCsv(csvPath, 'transaction', count)
  const res = await s.request('POST', '/batch?object=transaction', readFileSync(csvPath, 'utf8'), { 'content-type': 'text/csv' })
  const { job_id: jobId } = (await res.json()) as { job_id: string }
  return { jobId, records }
}
