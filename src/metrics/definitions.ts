// Every hsmproxy metric, defined here and nowhere else (names from docs/design.md "Metrics").
// Label sets are small and bounded: HSM ids, configured routes and upstream targets, fixed enums.
// `aggregator` says how the primary combines workers (workers: N): counts and histograms add up,
// but every worker sees the same HSM or certificate, so those gauges take the min or max.
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

/** Seconds from 50 µs doubling to ~6.5 s: resolves a fast HSM sign and a stalled upstream alike. */
export const LATENCY_BUCKETS: number[] = Array.from(
  { length: 18 }, (_, i) => Number((0.00005 * 2 ** i).toPrecision(6)),
);

/** The per-HSM key limit of the modelled hardware (CloudHSM: 3,500 keys, token + session). */
export const HSM_KEYS_LIMIT = 3500;

function histogram<L extends string>(
  registry: Registry, name: string, help: string, labelNames: readonly L[],
): Histogram<L> {
  return new Histogram({ name, help, labelNames, buckets: LATENCY_BUCKETS, registers: [registry] });
}

function build(registry: Registry) {
  const r = [registry];
  return {
    hsmRequestDuration: histogram(registry, 'hsmproxy_hsm_request_duration_seconds', 'Round trip of one HSM request as seen by the client, by operation, mechanism and HSM.', ['op', 'mechanism', 'hsm'] as const),
    hsmQueueWait: histogram(registry, 'hsmproxy_hsm_queue_wait_seconds', 'Time a request waited for a crypto unit inside the HSM (reported by the HSM).', ['op', 'hsm'] as const),
    hsmServiceTime: histogram(registry, 'hsmproxy_hsm_service_seconds', 'Time the HSM spent on the operation itself (reported by the HSM).', ['op', 'mechanism', 'hsm'] as const),
    hsmRequests: new Counter({ name: 'hsmproxy_hsm_requests_total', help: 'HSM requests by operation, HSM and outcome (ok or an HSM_ERR_* code).', labelNames: ['op', 'hsm', 'outcome'] as const, registers: r }),
    hsmErrors: new Counter({ name: 'hsmproxy_hsm_errors_total', help: 'Failed HSM requests by HSM and error code.', labelNames: ['hsm', 'code'] as const, registers: r }),
    hsmInFlight: new Gauge({ name: 'hsmproxy_hsm_in_flight', help: 'Requests sent to the HSM and not yet answered.', labelNames: ['hsm'] as const, registers: r }),
    hsmUp: new Gauge({ name: 'hsmproxy_hsm_up', help: '1 when the HSM answers health checks, 0 when it does not.', labelNames: ['hsm'] as const, aggregator: 'min', registers: r }),
    hsmKeys: new Gauge({ name: 'hsmproxy_hsm_keys', help: 'Keys occupied on the HSM, by kind (token or session).', labelNames: ['hsm', 'kind'] as const, aggregator: 'max', registers: r }),
    hsmKeysMax: new Gauge({ name: 'hsmproxy_hsm_keys_max', help: `Key capacity of the HSM (${HSM_KEYS_LIMIT} on the modelled hardware).`, labelNames: ['hsm'] as const, aggregator: 'max', registers: r }),
    hsmHedgesSent: new Counter({ name: 'hsmproxy_hsm_hedges_sent_total', help: 'Signs sent to a second HSM because this HSM had not answered by its recent p95 (hedged requests).', labelNames: ['hsm'] as const, registers: r }),
    hsmHedgesWon: new Counter({ name: 'hsmproxy_hsm_hedges_won_total', help: 'Hedged signs where the second HSM answered before this one.', labelNames: ['hsm'] as const, registers: r }),
    hsmHedgesRefused: new Counter({ name: 'hsmproxy_hsm_hedges_refused_total', help: 'Signs late on this HSM that the hedge budget (hsm.signing.hedge.maxShare) did not hedge.', labelNames: ['hsm'] as const, registers: r }),
    hsmUtilisation: new Gauge({ name: 'hsmproxy_hsm_utilisation_ratio', help: 'Busy fraction of the HSM crypto units (0..1), when the HSM reports it.', labelNames: ['hsm'] as const, aggregator: 'max', registers: r }),
    tlsHandshakeDuration: histogram(registry, 'hsmproxy_tls_handshake_duration_seconds', 'TLS handshake duration from ClientHello to Finished, by version, key type, resumption and key exchange group.', ['version', 'key_type', 'resumed', 'group'] as const),
    tlsSignWait: histogram(registry, 'hsmproxy_tls_handshake_sign_wait_seconds', 'Part of the handshake spent waiting for the private-key signature.', ['version', 'key_type'] as const),
    tlsHandshakes: new Counter({ name: 'hsmproxy_tls_handshakes_total', help: 'TLS handshakes by result (ok, alert_sent, alert_received, closed, timeout, sign_error), alert, listener, key exchange group (IANA name; empty before one was chosen) and credential.', labelNames: ['result', 'alert', 'listener', 'group', 'credential'] as const, registers: r }),
    tlsHsmSignaturesSaved: new Counter({ name: 'hsmproxy_tls_hsm_signatures_saved_total', help: 'Full handshakes whose CertificateVerify a delegated credential signed in memory instead of the HSM.', labelNames: ['listener'] as const, registers: r }),
    delegatedCredentialExpiry: new Gauge({ name: 'hsmproxy_delegated_credential_expiry_seconds', help: 'Seconds until the serving delegated credential of each certificate expires (0: none serves, HSM signatures instead).', labelNames: ['listener', 'certificate'] as const, aggregator: 'min', registers: r }),
    delegatedCredentialRenewals: new Counter({ name: 'hsmproxy_delegated_credential_renewals_total', help: 'Delegated credentials made (result ok) and attempts the HSM did not sign (result failed).', labelNames: ['listener', 'result'] as const, registers: r }),
    delegatedCredentialFallback: new Gauge({ name: 'hsmproxy_delegated_credential_fallback', help: '1 while a certificate that delegates has no valid credential and is served with HSM signatures.', labelNames: ['listener', 'certificate'] as const, aggregator: 'max', registers: r }),
    tlsConnectionsRefused: new Counter({ name: 'hsmproxy_tls_connections_refused_total', help: 'Connections closed at accept by a listener limit, before any TLS work, by listener and reason (listener_connections, listener_handshakes, client_connections, client_handshakes).', labelNames: ['listener', 'reason'] as const, registers: r }),
    tlsHandshakesShed: new Counter({ name: 'hsmproxy_tls_handshakes_shed_total', help: 'Full handshakes shed before their key exchange and HSM signature, by listener and reason (client_rate, signing_queue).', labelNames: ['listener', 'reason'] as const, registers: r }),
    httpRequestDuration: histogram(registry, 'hsmproxy_http_request_duration_seconds', 'HTTP request duration from request head to response end, by method, status class, route and client protocol (http1, h2).', ['method', 'status_class', 'route', 'protocol'] as const),
    httpUpstreamDuration: histogram(registry, 'hsmproxy_http_upstream_duration_seconds', 'Time from sending to an upstream until its response head, by route and upstream target.', ['route', 'upstream'] as const),
    httpUpstreamErrors: new Counter({ name: 'hsmproxy_http_upstream_errors_total', help: 'Requests the upstream did not answer: refused or reset (502), timeout (504), unavailable or queue_full (503).', labelNames: ['route', 'reason'] as const, registers: r }),
    httpConnections: new Gauge({ name: 'hsmproxy_http_connections', help: 'Client TLS connections open on the proxy (including WebSockets).', registers: r }),
    http2ConnectionsClosed: new Counter({ name: 'hsmproxy_http2_connections_closed_total', help: 'HTTP/2 client connections the proxy closed itself, by reason: rapid_reset and settings_timeout (GOAWAY with an error), idle (GOAWAY NO_ERROR).', labelNames: ['reason'] as const, registers: r }),
    httpRequestsInFlight: new Gauge({ name: 'hsmproxy_http_requests_in_flight', help: 'HTTP requests received and not yet answered.', registers: r }),
    upstreamHealthy: new Gauge({ name: 'hsmproxy_upstream_healthy', help: '1 when the upstream target passes health checks, 0 when not.', labelNames: ['upstream', 'target'] as const, aggregator: 'min', registers: r }),
    engineSignDuration: histogram(registry, 'hsmproxy_engine_sign_duration_seconds', 'Signature duration through the engine, by backend and key type.', ['backend', 'key_type'] as const),
    clusterRecommendedHsms: new Gauge({ name: 'hsmproxy_cluster_recommended_hsms', help: 'HSM count the scaling advisor recommends now.', registers: r }),
    clusterHsms: new Gauge({ name: 'hsmproxy_cluster_hsms', help: 'HSMs in the cluster (the members the client follows).', registers: r }),
    clusterUtilisation: new Gauge({ name: 'hsmproxy_cluster_utilisation', help: 'Busy fraction of each HSM\'s crypto units (0..1) as the scaling advisor sees it.', labelNames: ['hsm'] as const, registers: r }),
    clusterSignP99: new Gauge({ name: 'hsmproxy_cluster_sign_latency_p99_seconds', help: 'p99 round trip of HSM signs over a sliding window (1m, 5m).', labelNames: ['window'] as const, registers: r }),
    clusterQueueWaitP99: new Gauge({ name: 'hsmproxy_cluster_queue_wait_p99_seconds', help: 'p99 HSM-side queue wait of signs over a sliding window (1m, 5m).', labelNames: ['window'] as const, registers: r }),
    clusterScalingActions: new Counter({ name: 'hsmproxy_cluster_scaling_actions_total', help: 'Autoscale actions on the simulated cluster, by action (add, remove) and result (ok, failed).', labelNames: ['action', 'result'] as const, registers: r }),
    engineSigns: new Counter({ name: 'hsmproxy_engine_signs_total', help: 'Signatures made through the engine, by backend, key type and outcome.', labelNames: ['backend', 'key_type', 'outcome'] as const, registers: r }),
    clientGateConnections: new Counter({ name: 'hsmproxy_client_gate_connections_total', help: 'TCP connections at a listener\'s client gate, by how the client address was learnt (direct, proxy-v1, proxy-v2, local) or why the connection was refused (source_not_allowed, malformed, timeout, closed).', labelNames: ['listener', 'result'] as const, registers: r }),
    certificateNotAfter: new Gauge({ name: 'hsmproxy_certificate_not_after_seconds', help: 'Expiry (notAfter, Unix seconds) of each certificate a listener serves, by listener, subject and serial.', labelNames: ['listener', 'subject', 'serial'] as const, aggregator: 'min', registers: r }),
    ...acmeMetrics(r),
  };
}

/** ACME: orders by result and challenge, and per certificate the seconds left and consecutive failures. */
function acmeMetrics(r: Registry[]) {
  const notAfter = new Map<string, number>();
  return {
    acmeOrders: new Counter({ name: 'hsmproxy_acme_orders_total', help: 'ACME orders by result (issued, failed) and challenge type.', labelNames: ['result', 'challenge'] as const, registers: r }),
    acmeFailures: new Gauge({ name: 'hsmproxy_acme_renewal_consecutive_failures', help: 'Orders of an ACME certificate that failed in a row (0 once one succeeds), by certificate name.', labelNames: ['name'] as const, aggregator: 'max', registers: r }),
    /** The notAfter (ms) of each ACME certificate, from which the expiry gauge is computed at each scrape. */
    acmeNotAfter: notAfter,
    acmeExpiry: new Gauge({
      name: 'hsmproxy_acme_certificate_expiry_seconds', help: 'Seconds until the ACME certificate served under this name expires (negative once expired).',
      labelNames: ['name'] as const, aggregator: 'min', registers: r,
      collect() {
        this.reset();
        for (const [name, ms] of notAfter) this.set({ name }, Math.floor((ms - Date.now()) / 1000));
      },
    }),
  };
}

/** The typed handles of every hsmproxy metric in one registry. */
export type HsmproxyMetrics = ReturnType<typeof build>;

const byRegistry = new WeakMap<Registry, HsmproxyMetrics>();

/** Defines every metric in `registry` (once per registry; later calls return the same handles). */
export function defineMetrics(registry: Registry): HsmproxyMetrics {
  let m = byRegistry.get(registry);
  if (!m) {
    m = build(registry);
    byRegistry.set(registry, m);
  }
  return m;
}
