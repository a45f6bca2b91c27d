import { parseCookie } from 'cookie'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { type ApiKeyInfo, type ApiKeyStore, hasScope, type Scope, type SessionStore } from '../../storage/index.ts'
import { SluiceError } from '../errors.ts'

/** The dashboard's session cookie (httpOnly, SameSite=Strict), set by `POST /session`. */
export const SESSION_COOKIE = 'sluice_session'
/** The header the dashboard sends on every request: a cross-site form or simple cross-origin request cannot set it. */
const CSRF_HEADER = 'x-sluice-csrf'
const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS'])

declare module 'fastify' {
  interface FastifyContextConfig {
    /** The scope a route needs; `public` routes (health) need no key. */
    scope?: Scope | 'public'
  }
  interface FastifyRequest {
    apiKey?: ApiKeyInfo
  }
}

function bearer(request: FastifyRequest): string | undefined {
  const header = request.headers.authorization
  if (!header) return undefined
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header)
  return m?.[1]
}

/** The dashboard session token the request's cookie carries, if any. */
export function sessionToken(request: FastifyRequest): string | undefined {
  const header = request.headers.cookie
  return header ? parseCookie(header)[SESSION_COOKIE] : undefined
}

/**
 * The key a request acts as: its Bearer key, else the key its dashboard session was opened with (Bearer wins,
 * so API clients never depend on cookies). Throws SLUICE_UNAUTHORIZED when neither is valid.
 */
export function authenticate(request: FastifyRequest, keys: ApiKeyStore, sessions: SessionStore): { key: ApiKeyInfo; via: 'bearer' | 'session' } {
  const secret = bearer(request)
  if (secret) {
    const key = keys.verify(secret)
    if (!key) throw new SluiceError('SLUICE_UNAUTHORIZED', 'the API key is unknown or revoked')
    return { key, via: 'bearer' }
  }
  const token = sessionToken(request)
  if (!token) throw new SluiceError('SLUICE_UNAUTHORIZED', 'send an API key as Authorization: Bearer <key>, or sign in to the dashboard')
  const session = sessions.verify(token)
  if (!session) throw new SluiceError('SLUICE_UNAUTHORIZED', 'the dashboard session has expired, was signed out, or its key was revoked; sign in again')
  return { key: session.key, via: 'session' }
}

/** A browser sends the cookie with any request to this host, so one that changes state must show it comes from the dashboard. */
function checkSameOrigin(request: FastifyRequest): void {
  if (!request.headers[CSRF_HEADER])
    throw new SluiceError('SLUICE_CSRF_REJECTED', `a request signed in by the dashboard cookie must send the ${CSRF_HEADER} header`)
  const origin = request.headers.origin
  if (origin && (!URL.canParse(origin) || new URL(origin).host !== request.headers.host))
    throw new SluiceError('SLUICE_CSRF_REJECTED', `the request comes from ${origin}, not from this server's dashboard`)
}

/**
 * Every route needs a live key with its declared scope (default `admin`, so a forgotten declaration fails closed),
 * given as a Bearer key or through a dashboard session cookie.
 */
export function installAuth(app: FastifyInstance, keys: ApiKeyStore, sessions: SessionStore): void {
  app.decorateRequest('apiKey', undefined)
  const check = (request: FastifyRequest): void => {
    // routeOptions is an object fastify builds on every read.
    const { config, url } = request.routeOptions
    const scope = config?.scope ?? 'admin'
    if (scope === 'public' || !url) return
    const { key, via } = authenticate(request, keys, sessions)
    if (via === 'session' && !SAFE_METHODS.has(request.method)) checkSameOrigin(request)
    if (!hasScope(key, scope)) throw new SluiceError('SLUICE_FORBIDDEN', `this route needs the ${scope} scope; the key has ${key.scopes.join(', ')}`)
    keys.touch(key)
    request.apiKey = key
  }
  // A callback hook: an async one costs a promise and a turn of the microtask queue on every request.
  app.addHook('onRequest', (request, _reply, done) => {
    try {
      check(request)
    } catch (err) {
      return done(err as Error)
    }
    done()
  })
}
