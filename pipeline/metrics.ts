import { AggregatorRegistry, Counter, collectDefaultMetrics, Histogram, type MetricObjectWithValues, type MetricValue, Registry } from 'prom-client'

/**
 * The Prometheus metrics of one process, or of one of its role threads (which leave the process's own, CPU,
 * memory and the like, to the main thread); roles share it, `/metrics` exposes it.
 */
export function createMetrics(opts: { processMetrics: boolean }) {
  const registry = new Registry()
  if (opts.processMetrics) collectDefaultMetrics({ register: registry, prefix: 'sluice_process_' })
  return {
    registry,
    /** Metrics kept by the process's role threads, read when `/metrics` is asked. */
    threads: new Set<() => Promise<MetricObjectWithValues<MetricValue<string>>[]>>(),
    ingestRecords: new Counter({
      name: 'sluice_ingest_records_total',
      help: 'Records received over HTTP, by object and outcome (accepted, duplicate, rejected, unavailable).',
      labelNames: ['object', 'outcome'] as const,
      registers: [registry],
    }),
    ingestLatency: new Histogram({
      name: 'sluice_ingest_duration_seconds',
      help: 'Time from request to answer for accepted records, including the JetStream ack.',
      labelNames: ['object'] as const,
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers: [registry],
    }),
    sinkRecords: new Counter({
      name: 'sluice_sink_records_total',
      help: 'Records written to the analytics store, by object.',
      labelNames: ['object'] as const,
      registers: [registry],
    }),
    sinkPoison: new Counter({
      name: 'sluice_sink_poison_messages_total',
      help: 'Messages the analytics sink could not decode and terminated.',
      registers: [registry],
    }),
    sinkParameterWrites: new Counter({
      name: 'sluice_sink_parameter_writes_total',
      help: 'Analytics writes DuckDB could not read from the append file, made again from a parameter: a value that does not convert to its column (sent under an older schema version), or, rising with every write, an unreadable append file in the data dir.',
      registers: [registry],
    }),
    sinkBatchLatency: new Histogram({
      name: 'sluice_sink_batch_duration_seconds',
      help: 'Time to write one micro-batch to DuckDB.',
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    }),
    freshness: new Histogram({
      name: 'sluice_freshness_seconds',
      help: 'Time from receipt by ingress to being queryable in the analytics store, of records sent one at a time (a batch job has its own timings).',
      buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10],
      registers: [registry],
    }),
  }
}

export type Metrics = ReturnType<typeof createMetrics>

/** The Prometheus text of the process: its own registry and its threads'. */
export async function metricsText(metrics: Metrics): Promise<string> {
  if (metrics.threads.size === 0) return metrics.registry.metrics()
  const parts = await Promise.all([metrics.registry.getMetricsAsJSON(), ...[...metrics.threads].map((read) => read())])
  return AggregatorRegistry.aggregate(parts).metrics()
}
