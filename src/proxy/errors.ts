// Errors of proxy/: one base class with a stable code, one subclass per failure.

/** Base class of every proxy error; `code` is stable, the message is for people. */
export class ProxyError extends Error {
  constructor(message: string, readonly code: string = 'PROXY_ERR', options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ProxyError';
  }
}

/** The upstream did not accept the connection or broke it (answered as 502). */
export class UpstreamRefusedError extends ProxyError {
  constructor(readonly target: string, reason: string) {
    super(`upstream ${target} failed: ${reason}`, 'PROXY_ERR_UPSTREAM_REFUSED');
    this.name = 'UpstreamRefusedError';
  }
}

/** The upstream did not connect or answer in time (answered as 504). */
export class UpstreamTimeoutError extends ProxyError {
  constructor(readonly target: string, readonly phase: 'connect' | 'response', readonly timeoutMs: number) {
    super(`upstream ${target} did not ${phase === 'connect' ? 'accept the connection' : 'respond'} within ${timeoutMs} ms`, 'PROXY_ERR_UPSTREAM_TIMEOUT');
    this.name = 'UpstreamTimeoutError';
  }
}

/** A TLS listener could not be created or updated (bad certificate file, port in use). */
export class ListenerError extends ProxyError {
  constructor(readonly listener: string, reason: string, options?: { cause?: unknown }) {
    super(`listener "${listener}": ${reason}`, 'PROXY_ERR_LISTENER', options);
    this.name = 'ListenerError';
  }
}

/** A reload was refused; the previous configuration keeps serving. */
export class ReloadRefusedError extends ProxyError {
  constructor(reason: string, options?: { cause?: unknown }) {
    super(`reload refused, still serving the previous configuration: ${reason}`, 'PROXY_ERR_RELOAD_REFUSED', options);
    this.name = 'ReloadRefusedError';
  }
}

/** An operation needs a running proxy (or a stopped one). */
export class ProxyStateError extends ProxyError {
  constructor(message: string) {
    super(message, 'PROXY_ERR_STATE');
    this.name = 'ProxyStateError';
  }
}

/** The admin server could not listen on admin.address:admin.port (most often: the port is in use). */
export class AdminListenError extends ProxyError {
  constructor(readonly address: string, readonly port: number, err: NodeJS.ErrnoException) {
    const where = `admin port ${address}:${port} (admin.port)`;
    super(err.code === 'EADDRINUSE'
      ? `${where} is in use: another hsmproxy or another program listens there; stop it or set another admin.port`
      : `cannot listen on the ${where}: ${err.message}`, 'PROXY_ERR_ADMIN_LISTEN', { cause: err });
    this.name = 'AdminListenError';
  }
}

/** The demo upstream (`demo: true`) could not listen on the address upstreams.demo.targets names. */
export class DemoUpstreamListenError extends ProxyError {
  constructor(readonly address: string, readonly port: number, err: NodeJS.ErrnoException) {
    const where = `demo upstream port ${address}:${port} (upstreams.demo.targets)`;
    super(err.code === 'EADDRINUSE'
      ? `${where} is in use: another hsmproxy demo or another program listens there; stop it or point upstreams.demo.targets at a free port`
      : `cannot listen on the ${where}: ${err.message}`, 'PROXY_ERR_DEMO_UPSTREAM_LISTEN', { cause: err });
    this.name = 'DemoUpstreamListenError';
  }
}
