// One ACME order (RFC 8555 §7.4) through acme-client's step calls: new order, authorizations,
// each challenge published where the CA will look and completed, a certificate key generated in
// the HSM, the CSR signed with it (pki/), finalize, download, and the returned chain checked.
import { X509Certificate } from 'node:crypto';
import type acme from 'acme-client';
import { crypto as acmeCrypto } from 'acme-client';
import type { AcmeCertificateConfig, AcmeKeyType } from '../config/index.js';
import { type Backend, type CertifiedKey, type Engine, type KeyAlgorithm, type KeyHandle, type SoftBackend } from '../engine/index.js';
import { createCsr, signingKey } from '../pki/index.js';
import type { AcmeAccount } from './account.js';
import type { PublishedChallenge } from './certificate-store.js';
import type { PendingChallenges } from './challenges.js';
import { AcmeCaError, AcmeChallengeError, AcmeInvalidCertificateError, describeAcmeFailure } from './errors.js';

/** Where acme/ logs each step (a pino logger fits). */
export interface AcmeLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

/** What an order needs from its surroundings. */
export interface OrderContext {
  account: AcmeAccount;
  engine: Engine;
  /** Where certificate keys are generated (the HSM cluster). */
  backend: Backend;
  /** Holds the throwaway tls-alpn-01 validation keys (no HSM signature is spent on them). */
  soft: SoftBackend;
  challenges: PendingChallenges;
  log: AcmeLog;
  /**
   * Publishes a challenge where the other proxies of the cluster answer it too (resolving once
   * they have had time to look); returns its withdrawal. Absent: only this process answers.
   */
  announce?: (challenge: PublishedChallenge) => Promise<() => Promise<void>>;
}

/** The RFC 8737 validation certificate for `name` (a software key made for it; no HSM signature spent). */
export async function alpnChallengeCertificate(
  engine: Engine, soft: SoftBackend, name: string, keyAuthorization: string,
): Promise<{ certified: CertifiedKey; dispose: () => void }> {
  const authz = { identifier: { type: 'dns', value: name } } as acme.Authorization;
  const [keyPem, certPem] = await acmeCrypto.createAlpnCertificate(authz, keyAuthorization, await acmeCrypto.createPrivateEcdsaKey('P-256'));
  const handle = engine.adopt(soft.load(keyPem.toString(), `tls-alpn-01 key for ${name}`), soft);
  const chain = [Buffer.from(new X509Certificate(certPem).raw)];
  const dispose = (): void => { void soft.delete(handle).catch(() => undefined); };
  return { certified: { chain, signer: await engine.signer(handle) }, dispose };
}

/** A certificate the CA issued for an HSM key, checked. */
export interface IssuedCertificate {
  chainPem: string;
  leaf: X509Certificate;
  key: KeyHandle;
}

export const KEY_ALGORITHMS: Record<AcmeKeyType, KeyAlgorithm> = {
  'rsa:2048': { type: 'rsa', bits: 2048 },
  'ec:p256': { type: 'ec', curve: 'P-256' },
  'ec:p384': { type: 'ec', curve: 'P-384' },
};

/**
 * Runs one order to a checked certificate. The key is `reuse` (reuseKey: the current issue's HSM
 * key, left alone whatever happens) or a new HSM key, destroyed if the order fails after making it.
 */
export async function orderCertificate(
  ctx: OrderContext, spec: AcmeCertificateConfig,
  keyRef: { write(key: KeyHandle): Promise<unknown>; remove(key: KeyHandle): Promise<unknown> },
  replaces?: string, reuse?: KeyHandle,
): Promise<IssuedCertificate> {
  const { client } = ctx.account;
  const name = spec.names[0]!;
  const step = <T>(what: string, run: () => Promise<T>): Promise<T> => {
    ctx.log.info({ acme: name, step: what }, `acme order step: ${what}`);
    return run().catch((err: unknown) => {
      if (err instanceof AcmeChallengeError || err instanceof AcmeInvalidCertificateError) throw err;
      throw new AcmeCaError(`ordering ${name}: ${what} failed: ${describeAcmeFailure(err)}`, { cause: err });
    });
  };
  const identifiers = spec.names.map((value) => ({ type: 'dns', value }));
  // RFC 9773 §5: a renewal names the certificate it replaces (acme-client passes the field through).
  const request = { identifiers, ...(replaces ? { replaces } : {}) } as Parameters<typeof client.createOrder>[0];
  const order = await step(replaces ? `new order replacing ${replaces}` : 'new order', () => client.createOrder(request));
  const authorizations = await step('authorizations', () => client.getAuthorizations(order));
  await Promise.all(authorizations.map((authz) => validate(ctx, spec, authz)));

  const key = reuse ?? ctx.engine.adopt(await ctx.backend.generateKeyPair({ algorithm: KEY_ALGORITHMS[spec.keyType], label: `acme-${name}-${Date.now().toString(36)}` }), ctx.backend);
  ctx.log.info({ acme: name, keyId: key.keyId, label: key.label }, reuse ? 'acme order step: the current HSM key is reused (reuseKey)' : 'acme order step: certificate key generated in the HSM');
  try {
    if (!reuse) await keyRef.write(key);
    const csr = await createCsr(await signingKey(await ctx.engine.signer(key), ctx.engine.webcrypto()), {
      subject: `CN=${name}`, sans: spec.names.map((n) => `DNS:${n}`),
    });
    const finalized = await step('finalize', () => client.finalizeOrder(order, csr));
    const chainPem = await step('download certificate', () => client.getCertificate(finalized));
    const leaf = checkIssued(chainPem, spec, key);
    ctx.log.info({ acme: name, serial: leaf.serialNumber, notAfter: leaf.validTo }, 'acme order step: certificate issued');
    return { chainPem, leaf, key };
  } catch (err) {
    if (!reuse) {
      await ctx.backend.delete(key).catch(() => undefined);
      await keyRef.remove(key).catch(() => undefined);
    }
    throw err;
  }
}

/** Publishes, completes and waits for one authorization's challenge of the configured type. */
async function validate(ctx: OrderContext, spec: AcmeCertificateConfig, authz: acme.Authorization): Promise<void> {
  const { client } = ctx.account;
  const name = authz.identifier.value;
  // RFC 8555 §7.1.4: a CA may reuse an authorization it validated earlier for this account.
  if (authz.status === 'valid') return;
  const challenge = authz.challenges.find((c) => c.type === spec.challenge);
  if (!challenge) {
    throw new AcmeChallengeError(name, `the CA offers no ${spec.challenge} challenge for ${name} (it offers: ${authz.challenges.map((c) => c.type).join(', ') || 'none'})`);
  }
  let keyAuthorization: string;
  let unpublish: () => void;
  try {
    keyAuthorization = await client.getChallengeKeyAuthorization(challenge);
    if (spec.challenge === 'tls-alpn-01') {
      const { certified, dispose } = await alpnChallengeCertificate(ctx.engine, ctx.soft, name, keyAuthorization);
      const remove = ctx.challenges.addTlsAlpn(name, certified);
      unpublish = () => { remove(); dispose(); };
    } else {
      unpublish = ctx.challenges.addHttp(challenge.token, keyAuthorization);
    }
  } catch (err) {
    throw new AcmeCaError(`ordering ${spec.names[0]!}: preparing the ${spec.challenge} challenge for ${name} failed: ${describeAcmeFailure(err)}`, { cause: err });
  }
  let withdraw: (() => Promise<void>) | undefined;
  try {
    withdraw = await ctx.announce?.(spec.challenge === 'tls-alpn-01'
      ? { type: 'tls-alpn-01', name, keyAuthorization }
      : { type: 'http-01', token: challenge.token, keyAuthorization });
  } catch (err) {
    unpublish();
    throw new AcmeCaError(`ordering ${spec.names[0]!}: publishing the ${spec.challenge} challenge for ${name} in the cluster failed: ${describeAcmeFailure(err)}`, { cause: err });
  }
  ctx.log.info({ acme: spec.names[0], name, challenge: challenge.type, cluster: withdraw !== undefined }, 'acme order step: challenge published');
  try {
    await client.completeChallenge(challenge);
    await client.waitForValidStatus(challenge);
    ctx.log.info({ acme: spec.names[0], name, challenge: challenge.type }, 'acme order step: challenge valid');
  } catch (err) {
    throw new AcmeChallengeError(name, `the CA did not validate ${name} over ${challenge.type}: ${describeAcmeFailure(err)}`, { cause: err });
  } finally {
    unpublish();
    await withdraw?.();
  }
}

/** The chain must parse; its leaf must certify the HSM key for every name, be current, be signed by the next. */
function checkIssued(chainPem: string, spec: AcmeCertificateConfig, key: KeyHandle): X509Certificate {
  const blocks = chainPem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  const name = spec.names[0]!;
  if (blocks.length === 0) throw new AcmeInvalidCertificateError(`the CA returned no PEM certificate for ${name}; the previous certificate keeps serving`);
  let chain: X509Certificate[];
  try {
    chain = blocks.map((b) => new X509Certificate(b));
  } catch (err) {
    throw new AcmeInvalidCertificateError(`the CA returned a certificate for ${name} that does not parse (${(err as Error).message}); the previous certificate keeps serving`);
  }
  const leaf = chain[0]!;
  const bad = (why: string): never => { throw new AcmeInvalidCertificateError(`the CA returned an invalid certificate for ${name}: ${why}; the previous certificate keeps serving`); };
  if (!leaf.publicKey.equals(key.publicKey)) bad('its public key is not the HSM key of the CSR');
  const sans = (leaf.subjectAltName ?? '').split(/,\s*/).filter((s) => s.startsWith('DNS:')).map((s) => s.slice(4).toLowerCase());
  const missing = spec.names.filter((n) => !sans.includes(n));
  if (missing.length > 0) bad(`it does not name ${missing.join(', ')}`);
  const now = Date.now();
  if (Date.parse(leaf.validTo) <= now || Date.parse(leaf.validFrom) > now + 5 * 60_000) bad(`it is not valid now (${leaf.validFrom} to ${leaf.validTo})`);
  for (let i = 0; i + 1 < chain.length; i++) {
    if (!chain[i]!.verify(chain[i + 1]!.publicKey)) bad(`certificate ${i} of the chain is not signed by certificate ${i + 1}`);
  }
  return leaf;
}
