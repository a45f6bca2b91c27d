import type { JetStreamClient } from '@nats-io/jetstream'
import type { NatsConnection, Subscription } from '@nats-io/transport-node'
import type { SchemaVersion } from '../storage/index.ts'
import type { Logger } from './logger.ts'
import { SUBJECTS } from './streams.ts'

/** Announces a new schema version on `sluice.schema.changed.<object>` (kept in the SLUICE_SCHEMAS stream). */
export async function publishSchemaChange(js: JetStreamClient, version: SchemaVersion): Promise<void> {
  await js.publish(SUBJECTS.schemaChanged(version.object), JSON.stringify(version))
}

/** Calls `onChange` for every schema version announced from now on, by this process or any other. */
export function onSchemaChange(nc: NatsConnection, log: Logger, onChange: (version: SchemaVersion) => void | Promise<void>): Subscription {
  return nc.subscribe(SUBJECTS.schemaChanged('*'), {
    callback: (err, msg) => {
      if (err) return
      Promise.resolve()
        .then(() => onChange(msg.json<SchemaVersion>()))
        .catch((e) => log.error({ err: e, subject: msg.subject }, 'handling a schema change failed'))
    },
  })
}
