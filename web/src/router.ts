import { useEffect, useState } from 'preact/hooks'

/** Where the dashboard is: `#/records/transaction?country=DE` is path ['records', 'transaction'] and its params. */
export interface Route {
  path: string[]
  params: URLSearchParams
}

/**
 * Hash routes keep the dashboard's pages apart from the API's paths (`/records/transaction` is an API route;
 * `/#/records/transaction` is the page), so the server serves one page and never guesses.
 */
function currentRoute(): Route {
  const hash = location.hash.replace(/^#\/?/, '')
  const [path, query = ''] = hash.split('?')
  return { path: path.split('/').filter(Boolean).map(decodeURIComponent), params: new URLSearchParams(query) }
}

export function useRoute(): Route {
  const [route, setRoute] = useState(currentRoute)
  useEffect(() => {
    const update = () => setRoute(currentRoute())
    addEventListener('hashchange', update)
    return () => removeEventListener('hashchange', update)
  }, [])
  return route
}

/** The href of a page: `href(['records', 'account'], { record: id })`. Empty params are left out. */
export function href(path: string[], params: Record<string, string | undefined> = {}): string {
  const query = new URLSearchParams(Object.entries(params).filter((e): e is [string, string] => e[1] !== undefined && e[1] !== ''))
  const q = query.toString()
  return `#/${path.map(encodeURIComponent).join('/')}${q ? `?${q}` : ''}`
}

export function navigate(path: string[], params: Record<string, string | undefined> = {}): void {
  location.hash = href(path, params)
}
