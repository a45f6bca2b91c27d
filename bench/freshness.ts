import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'

/** A complete, valid transaction for the freshness probe; each probe changes transaction_id, since identical bodies are deduplicated. */
const SAMPLE_TRANSACTION = {
  transaction_id: 't-1',
  account_id: 'acc-1',
  amount: 42.5,
  currency: 'EUR',
  direction: 'debit',
  type: 'card_payment',
  status: 'completed',
  created_at: '2026-01-05T10:00:00Z',
  channel: 'pos',
  country: 'DE',
  counterparty_id: null,
  counterparty_name: null,
  merchant_id: 'm-1',
  merchant_name: 'Corner Grocery',
  merchant_category: '5411',
  card_id: 'card-1',
  device_id: null,
  ip_address: null,
  description: null,
  metadata: null,
}
/** Where a probe sends its record: a running Sluice's base URL and the headers with its key. */
export interface ProbeTarget {
  readonly url: string
  readonly headers: Record<string, string>
}

/**
 * POST-to-queryable time of one record: POSTs a transaction with this id, then asks for its record_id every
 * `pollEveryMs` until a query returns it. A problem instead when the POST is refused or the record is not
 * queryable within `timeoutMs`. With `syncDecision` the POST waits for the rule stage's decision
 * (`?decision=sync`), and `decided` says whether it came in time (or the answer said `pending`).
 */
export async function probeFreshness(
  sluice: ProbeTarget,
  transactionId: string,
  opts: { pollEveryMs: number; timeoutMs: number; syncDecision?: boolean },
): Promise<{ postMs: number; queryableMs: number; decided: boolean } | { problem: string }> {
  const started = performance.now()
  const res = await fetch(`${sluice.url}/transaction${opts.syncDecision ? '?decision=sync' : ''}`, {
    method: 'POST',
    headers: { ...sluice.headers, 'content-type': 'application/json' },
    body: JSON.stringify({ ...SAMPLE_TRANSACTION, transaction_id: transactionId }),
  })
  const answer = await res.text()
  const postMs = performance.now() - started
  if (res.status !== 202) return { problem: `POST /transaction answered ${res.status} during a freshness probe: ${answer}` }
  const { record_id: recordId, decision } = JSON.parse(answer) as { record_id: string; decision?: { status?: string } }
  const decided = decision !== undefined && decision.status !== 'pending'
  const query = `${sluice.url}/records/transaction?record_id=${encodeURIComponent(recordId)}&limit=1`
  for (;;) {
    const page = await fetch(query, { headers: sluice.headers })
    if (page.status !== 200) return { problem: `GET /records answered ${page.status} during a freshness probe: ${await page.text()}` }
    const { records } = (await page.json()) as { records: unknown[] }
    const now = performance.now()
    if (records.length > 0) return { postMs, queryableMs: now - started, decided }
    if (now - started > opts.timeoutMs) return { problem: `record ${recordId} was not queryable ${opts.timeoutMs} ms after its POST` }
    await sleep(opts.pollEveryMs)
  }
}

/** The value at `fraction` (0.5: the median) of ascending `sorted`; null when it is empty. */
export function percentile(sorted: number[], fraction: number): number | null {
  if (sorted.length === 0) return null
  return sorted[Math.min(sorted.length - 1, Math.ceil(fraction * sorted.length) - 1)]
}
