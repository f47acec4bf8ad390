// The RFC 7919 §A finite-field groups (TLS 1.3 only here): the primes, generator 2. Checked against
// OpenSSL's built-in ffdhe parameters in test/tls-groups.test.ts.

// The three primes share their leading digits (the binary expansion of e, RFC 7919 §A): the
// hex is written once, and each prime is the shared digits followed by its own.
const SHARED_ALL = [
  'ffffffffffffffffadf85458a2bb4a9aafdc5620273d3cf1d8b9c583ce2d3695a9e13641146433fbcc939dce249b3ef9',
  '7d2fe363630c75d8f681b202aec4617ad3df1ed5d5fd65612433f51f5f066ed0856365553ded1af3b557135e7f57c935',
  '984f0c70e0e68b77e2a689daf3efe8721df158a136ade73530acca4f483a797abc0ab182b324fb61d108a94bb2c8e3fb',
  'b96adab760d7f4681d4f42a3de394df4ae56ede76372bb190b07a7c8ee0a6d709e02fce1cdf7e2ecc03404cd28342f61',
  '9172fe9ce98583ff8e4f1232eef28183c3fe3b1b4c6fad733bb5fcbc2ec22005c58ef1837d1683b2c6f34a26c1b2effa',
  '886b423861',
].join('');
const SHARED_3072_4096 = [
  '1fcfdcde355b3b6519035bbc34f4def99c023861b46fc9d6e6c9077ad91d2691f7f7ee598cb0fac186d91caefe130985',
  '139270b4130c93bc437944f4fd4452e2d74dd364f2e21e71f54bff5cae82ab9c9df69ee86d2bc522363a0dabc521979b',
  '0deada1dbf9a42d5c4484e0abcd06bfa53ddef3c1b20ee3fd59d7c25e41d2b66',
].join('');

/** ffdhe2048: p = 2^2048 - 2^1984 + {[2^1918 e] + X} * 2^64 - 1. */
export const FFDHE2048_P = Buffer.from(`${SHARED_ALL}285c97ffffffffffffffff`, 'hex');

/** ffdhe3072: p = 2^3072 - 2^3008 + {[2^2942 e] + X} * 2^64 - 1. */
export const FFDHE3072_P = Buffer.from(`${SHARED_ALL}${SHARED_3072_4096}c62e37ffffffffffffffff`, 'hex');

/** ffdhe4096: p = 2^4096 - 2^4032 + {[2^3966 e] + X} * 2^64 - 1. */
export const FFDHE4096_P = Buffer.from([
  SHARED_ALL + SHARED_3072_4096,
  '9e1ef16e6f52c3164df4fb7930e9e4e58857b6ac7d5f42d69f6d187763cf1d5503400487f55ba57e31cc7a7135c886ef',
  'b4318aed6a1e012d9e6832a907600a918130c46dc778f971ad0038092999a333cb8b7a1a1db93d7140003c2a4ecea9f9',
  '8d0acc0a8291cdcec97dcf8ec9b55a7f88a46b4db5a851f44182e1c68a007e5e655f6affffffffffffffff',
].join(''), 'hex');
