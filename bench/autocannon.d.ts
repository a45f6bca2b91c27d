// autocannon 9 ships no type declarations; this covers the part of its programmatic API the benches use.
declare module 'autocannon' {
  /** One run's settings; `[<id>]` in `body` becomes a unique id per request when `idReplacement` is set. */
  export interface Options {
    url: string
    method?: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE'
    headers?: Record<string, string>
    body?: string | Buffer
    idReplacement?: boolean
    /** Per-request hooks; `setupRequest` may replace the body of each request. */
    requests?: { setupRequest?: (request: Record<string, unknown>) => Record<string, unknown> }[]
    connections?: number
    pipelining?: number
    /** Seconds. */
    duration?: number
    /** Seconds to wait for each response. */
    timeout?: number
  }

  /** Summary of a histogram; latencies are in milliseconds, request counts per second. */
  export interface Stats {
    average: number
    mean: number
    stddev: number
    min: number
    max: number
    p50: number
    p90: number
    p99: number
    p99_9: number
  }

  export interface Result {
    /** Seconds the run took. */
    duration: number
    latency: Stats
    /** Per-second samples; `total` is every completed request. */
    requests: Stats & { total: number; sent: number }
    errors: number
    timeouts: number
    non2xx: number
    statusCodeStats: Record<string, { count: number }>
  }

  export default function autocannon(opts: Options): PromiseLike<Result>
}
