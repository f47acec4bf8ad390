// Request routing: the Host header picks routes (exact name, then the most specific wildcard,
// then host-less routes), and among those the longest matching path prefix wins.
import type { RouteConfig } from '../config/index.js';

/** Lower-cased host without port, from a Host header (`[::1]:8443` → `::1`). */
export function hostOf(header: string | undefined): string {
  if (!header) return '';
  const h = header.trim().toLowerCase();
  if (h.startsWith('[')) return h.slice(1, h.indexOf(']') > 0 ? h.indexOf(']') : undefined);
  const colon = h.lastIndexOf(':');
  return (colon >= 0 ? h.slice(0, colon) : h).replace(/\.$/, '');
}

/** Whether `path` is under `prefix` on a segment boundary (`/api` matches `/api/x`, not `/apix`). */
export function underPrefix(path: string, prefix: string): boolean {
  if (prefix === '/' || path === prefix) return true;
  if (!path.startsWith(prefix)) return false;
  if (prefix.endsWith('/')) return true;
  const next = path[prefix.length];
  return next === '/' || next === '?';
}

/** Matches requests to routes; immutable, rebuilt on reload. */
export class Router {
  private readonly exact = new Map<string, RouteConfig[]>();
  private readonly wildcards: Array<{ suffix: string; routes: RouteConfig[] }> = [];
  private readonly anyHost: RouteConfig[] = [];

  constructor(routes: readonly RouteConfig[]) {
    const byLongestPrefix = (a: RouteConfig, b: RouteConfig) => b.pathPrefix.length - a.pathPrefix.length;
    for (const route of routes) {
      if (!route.host) this.anyHost.push(route);
      else if (route.host.startsWith('*.')) {
        const suffix = route.host.slice(1);
        let w = this.wildcards.find((x) => x.suffix === suffix);
        if (!w) this.wildcards.push((w = { suffix, routes: [] }));
        w.routes.push(route);
      } else this.exact.set(route.host, [...(this.exact.get(route.host) ?? []), route]);
    }
    for (const list of this.exact.values()) list.sort(byLongestPrefix);
    for (const w of this.wildcards) w.routes.sort(byLongestPrefix);
    this.wildcards.sort((a, b) => b.suffix.length - a.suffix.length);
    this.anyHost.sort(byLongestPrefix);
  }

  /** The route for a request, or undefined when none matches. */
  match(hostHeader: string | undefined, path: string): RouteConfig | undefined {
    const host = hostOf(hostHeader);
    const first = (list: RouteConfig[] | undefined) => list?.find((r) => underPrefix(path, r.pathPrefix));
    const exact = first(this.exact.get(host));
    if (exact) return exact;
    // Like nginx, `*.example.com` matches any depth below example.com, but not example.com itself.
    for (const w of this.wildcards) {
      if (host.length > w.suffix.length && host.endsWith(w.suffix)) {
        const r = first(w.routes);
        if (r) return r;
      }
    }
    return first(this.anyHost);
  }
}
