import { connect, type NatsConnection } from '@nats-io/transport-node'
import type { Logger } from './logger.ts'

/** A NATS connection that knows whether it is currently connected, so ingress can refuse fast while it is not. */
export interface SluiceNats {
  readonly nc: NatsConnection
  /** False between a disconnect and the next reconnect. */
  readonly connected: () => boolean
  close(): Promise<void>
}

export async function connectNats(servers: string, log: Logger, name = 'sluice'): Promise<SluiceNats> {
  // noAsyncTraces: otherwise nats.js captures a stack (two Errors) for every request in case it times out:
  // 9% of ingress's CPU when every POST was a retry (each looks up the original record's id). A timeout still
  // rejects with an error, without the caller's stack.
  const nc = await connect({ servers, name, maxReconnectAttempts: -1, reconnectTimeWait: 500, noAsyncTraces: true })
  let connected = true
  ;(async () => {
    for await (const s of nc.status()) {
      if (s.type === 'disconnect') {
        connected = false
        log.warn({ server: servers }, 'NATS disconnected')
      } else if (s.type === 'reconnect') {
        connected = true
        log.info({ server: servers }, 'NATS reconnected')
      }
    }
  })().catch(() => {})
  return {
    nc,
    connected: () => connected && !nc.isClosed(),
    async close() {
      if (nc.isClosed()) return
      await nc.drain().catch(() => nc.close())
    },
  }
}
