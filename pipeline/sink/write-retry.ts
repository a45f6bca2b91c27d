import { setTimeout as sleep } from 'node:timers/promises'
import type { Logger } from '../logger.ts'

const FIRST_RETRY_MS = 500
const MAX_RETRY_MS = 30_000

/**
 * Runs a sink's batch write until it succeeds, waiting longer after each failure; false if the sink stopped
 * first. A sink acks a batch through its last message (the consumer acks all before it), so it must not go
 * on past a batch it could not write: the records stay unacked in JetStream and nothing is skipped.
 */
export async function writeUntilStored(write: () => Promise<unknown>, opts: { log: Logger; what: string; stopped: AbortSignal }): Promise<boolean> {
  for (let failures = 0; ; failures++) {
    try {
      await write()
      return true
    } catch (err) {
      const retryMs = Math.min(FIRST_RETRY_MS * 2 ** failures, MAX_RETRY_MS)
      opts.log.error({ err, retry_ms: retryMs }, `${opts.what}: batch write failed; retrying`)
      await sleep(retryMs, undefined, { signal: opts.stopped }).catch(() => {})
      if (opts.stopped.aborted) return false
    }
  }
}
