// Turns the diagnostics_channel events of tls/, hsm/client and engine/ into metrics.
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import {
  CHANNELS, type AcmeCertificateEvent, type AcmeOrderEvent, type ClientGateEvent, type DelegatedCredentialEvent,
  type EngineSignEvent, type HsmHedgeEvent, type HsmRequestEvent, type HsmScalingEvent, type HsmStateEvent,
  type TlsHandshakeEvent,
  type TlsRefusedEvent,
} from './channels.js';
import { HSM_KEYS_LIMIT, type HsmproxyMetrics } from './definitions.js';

const seconds = (ms: number): number => (Number.isFinite(ms) && ms > 0 ? ms / 1000 : 0);

/** Records one handshake event. */
export function recordHandshake(m: HsmproxyMetrics, e: TlsHandshakeEvent): void {
  m.tlsHandshakes.inc({ result: e.result, alert: e.alert ?? '', listener: e.listener ?? '', group: e.group, credential: e.credential ?? '' });
  if (e.result === 'shed') m.tlsHandshakesShed.inc({ listener: e.listener ?? '', reason: e.reason ?? '' });
  if (e.result !== 'ok') return;
  if (e.credential === 'delegated') m.tlsHsmSignaturesSaved.inc({ listener: e.listener ?? '' });
  const keyType = e.keyType || 'none';
  m.tlsHandshakeDuration.observe(
    { version: e.version, key_type: keyType, resumed: String(e.resumed), group: e.group }, seconds(e.durationMs),
  );
  // A resumed handshake signs nothing; its zero wait would only dilute the signal.
  if (!e.resumed) m.tlsSignWait.observe({ version: e.version, key_type: keyType }, seconds(e.signWaitMs));
}

/** Records one connection refused at accept. */
export function recordRefused(m: HsmproxyMetrics, e: TlsRefusedEvent): void {
  m.tlsConnectionsRefused.inc({ listener: e.listener ?? '', reason: e.reason });
}

/** Records one HSM request event. */
export function recordHsmRequest(m: HsmproxyMetrics, e: HsmRequestEvent): void {
  m.hsmRequests.inc({ op: e.op, hsm: e.hsm, outcome: e.outcome });
  if (e.outcome !== 'ok') {
    m.hsmErrors.inc({ hsm: e.hsm, code: e.outcome });
    return;
  }
  m.hsmRequestDuration.observe({ op: e.op, mechanism: e.mechanism, hsm: e.hsm }, seconds(e.rttMs));
  m.hsmQueueWait.observe({ op: e.op, hsm: e.hsm }, seconds(e.queueWaitMs));
  m.hsmServiceTime.observe({ op: e.op, mechanism: e.mechanism, hsm: e.hsm }, seconds(e.serviceMs));
}

/** Records one hedged-sign event, against the HSM that was late. */
export function recordHsmHedge(m: HsmproxyMetrics, e: HsmHedgeEvent): void {
  if (e.outcome === 'sent') m.hsmHedgesSent.inc({ hsm: e.hsm });
  else if (e.outcome === 'won') m.hsmHedgesWon.inc({ hsm: e.hsm });
  else if (e.outcome === 'refused') m.hsmHedgesRefused.inc({ hsm: e.hsm });
}

/** Records one HSM state event. */
export function recordHsmState(m: HsmproxyMetrics, e: HsmStateEvent): void {
  m.hsmUp.set({ hsm: e.hsm }, e.up ? 1 : 0);
  m.hsmInFlight.set({ hsm: e.hsm }, e.inFlight);
  if (e.keysToken !== undefined) m.hsmKeys.set({ hsm: e.hsm, kind: 'token' }, e.keysToken);
  if (e.keysSession !== undefined) m.hsmKeys.set({ hsm: e.hsm, kind: 'session' }, e.keysSession);
  m.hsmKeysMax.set({ hsm: e.hsm }, e.keysMax ?? HSM_KEYS_LIMIT);
  if (e.utilisation !== undefined) m.hsmUtilisation.set({ hsm: e.hsm }, e.utilisation);
}

/** Records one engine signature event. */
export function recordEngineSign(m: HsmproxyMetrics, e: EngineSignEvent): void {
  m.engineSigns.inc({ backend: e.backend, key_type: e.keyType, outcome: e.outcome });
  if (e.outcome === 'ok') m.engineSignDuration.observe({ backend: e.backend, key_type: e.keyType }, seconds(e.durationMs));
}

/** Records one autoscale action. */
export function recordScaling(m: HsmproxyMetrics, e: HsmScalingEvent): void {
  m.clusterScalingActions.inc({ action: e.action, result: e.result });
}

/** Records one connection at a client gate. */
export function recordClientGate(m: HsmproxyMetrics, e: ClientGateEvent): void {
  m.clientGateConnections.inc({ listener: e.listener, result: e.result });
}

/** Records the end of one ACME order (and the certificate it leaves served). */
export function recordAcmeOrder(m: HsmproxyMetrics, e: AcmeOrderEvent): void {
  m.acmeOrders.inc({ result: e.result, challenge: e.challenge });
}

/** Records an ACME certificate's expiry and failures in a row. */
export function recordAcmeCertificate(m: HsmproxyMetrics, e: AcmeCertificateEvent): void {
  if (e.removed) {
    m.acmeFailures.remove({ name: e.name });
    m.acmeNotAfter.delete(e.name);
    return;
  }
  m.acmeFailures.set({ name: e.name }, e.consecutiveFailures);
  if (e.notAfterMs !== undefined) m.acmeNotAfter.set(e.name, e.notAfterMs);
}

// Expiry instants of the serving credentials, per metrics handle: the gauge reads seconds left at scrape time.
interface CredentialExpiry { listener: string; certificate: string; at: number }
const credentialExpiry = new WeakMap<HsmproxyMetrics, Map<string, CredentialExpiry>>();

/** Records one delegated-credential lifecycle event. */
export function recordDelegatedCredential(m: HsmproxyMetrics, e: DelegatedCredentialEvent): void {
  let expiries = credentialExpiry.get(m);
  if (!expiries) {
    const map = new Map<string, CredentialExpiry>();
    expiries = map;
    credentialExpiry.set(m, map);
    // prom-client calls collect() before each scrape: seconds left, never negative.
    const gauge = m.delegatedCredentialExpiry as unknown as { collect?: () => void };
    gauge.collect = () => {
      for (const v of map.values()) {
        const left = Math.max(0, (v.at - Date.now()) / 1000);
        m.delegatedCredentialExpiry.set({ listener: v.listener, certificate: v.certificate }, left);
      }
    };
  }
  const key = `${e.listener}\0${e.certificate}`;
  const labels = { listener: e.listener, certificate: e.certificate };
  if (e.event === 'issued') m.delegatedCredentialRenewals.inc({ listener: e.listener, result: 'ok' });
  if (e.event === 'renewal_failed') m.delegatedCredentialRenewals.inc({ listener: e.listener, result: 'failed' });
  if (e.event === 'stopped') {
    expiries.delete(key);
    m.delegatedCredentialExpiry.remove(labels);
    m.delegatedCredentialFallback.remove(labels);
    return;
  }
  expiries.set(key, { ...labels, at: e.expiresAtMs ?? 0 });
  m.delegatedCredentialExpiry.set(labels, Math.max(0, ((e.expiresAtMs ?? 0) - Date.now()) / 1000));
  m.delegatedCredentialFallback.set(labels, e.expiresAtMs !== undefined && e.expiresAtMs > Date.now() ? 0 : 1);
}

/** Subscribes `m` to every channel of the contract; returns the function that unsubscribes. */
export function subscribeMetrics(m: HsmproxyMetrics): () => void {
  // A malformed event from an emitter must never throw into the emitter's code path.
  const guard = <E>(record: (m: HsmproxyMetrics, e: E) => void) => (msg: unknown) => {
    try {
      if (msg && typeof msg === 'object') record(m, msg as E);
    } catch {
      /* a bad label value is dropped, not propagated */
    }
  };
  const subs: Array<[string, (msg: unknown) => void]> = [
    [CHANNELS.tlsHandshake, guard(recordHandshake)],
    [CHANNELS.hsmRequest, guard(recordHsmRequest)],
    [CHANNELS.hsmState, guard(recordHsmState)],
    [CHANNELS.hsmHedge, guard(recordHsmHedge)],
    [CHANNELS.engineSign, guard(recordEngineSign)],
    [CHANNELS.hsmScaling, guard(recordScaling)],
    [CHANNELS.acmeOrder, guard(recordAcmeOrder)],
    [CHANNELS.acmeCertificate, guard(recordAcmeCertificate)],
    [CHANNELS.delegatedCredential, guard(recordDelegatedCredential)],
    [CHANNELS.tlsRefused, guard(recordRefused)],
    [CHANNELS.clientGate, guard(recordClientGate)],
  ];
  for (const [name, fn] of subs) subscribe(name, fn);
  return () => { for (const [name, fn] of subs) unsubscribe(name, fn); };
}
