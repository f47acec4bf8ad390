// proxy/: HTTP over TLS sockets — listeners (through a TlsListenerFactory: tls/ TlsServer with
// offloaded signatures, or node:tls), our own strict HTTP/1.1 server (http1/), routing by Host and
// normalised path, upstream pools on undici with health checks, forwarded headers, WebSocket
// upgrade, graceful shutdown, reload, and the admin server.
// May import config/, metrics/, and later tls/ and engine/.
export * from './admin.js';
export * from './errors.js';
export * from './listener.js';
export { nodeTlsListenerFactory } from './node-tls-listener.js';
export { Proxy, type ProxyOptions, type ShutdownReport } from './proxy.js';
export { Router, hostOf, underPrefix } from './router.js';
export { startDemoUpstream, type DemoUpstream } from './demo-upstream.js';
