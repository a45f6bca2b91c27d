import { type Logger, pino } from 'pino'
import type { SluiceConfig } from './config.ts'

export type { Logger }

/** Structured JSON logs on stdout; one root logger per process, roles take children named for themselves. */
export function createLogger(config: Pick<SluiceConfig, 'log'>): Logger {
  return pino({ level: config.log.level, base: { service: 'sluice' } })
}
