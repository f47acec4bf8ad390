import t from 'tap';
import { formatPkcs11Uri, parsePkcs11Uri } from '../src/engine/pkcs11/uri.js';

t.test('parses the RFC 7512 example with percent-encoded token, manufacturer and id', async (t) => {
  const uri = parsePkcs11Uri('pkcs11:token=The%20Software%20PKCS%2311%20Softtoken;manufacturer=Snake%20Oil,%20Inc.;model=1.0;object=my-certificate;type=cert;id=%69%95%3E%5C%F4%BD%EC%91;serial=');
  t.equal(uri.token, 'The Software PKCS#11 Softtoken');
  t.equal(uri.manufacturer, 'Snake Oil, Inc.');
  t.equal(uri.model, '1.0');
  t.equal(uri.object, 'my-certificate');
  t.equal(uri.type, 'cert');
  t.same(uri.id, Buffer.from('69953e5cf4bdec91', 'hex'));
  t.equal(uri.serial, '');
});

t.test('parses query attributes: module path and pin source', async (t) => {
  const uri = parsePkcs11Uri('pkcs11:token=a;object=k?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/pin');
  t.equal(uri.modulePath, '/usr/lib/softhsm/libsofthsm2.so');
  t.equal(uri.pinSource, 'file:/etc/pin');
});

t.test('an empty pkcs11: URI is valid and names everything', async (t) => {
  t.same(parsePkcs11Uri('pkcs11:'), {});
});

t.test('the scheme is case-insensitive', async (t) => {
  t.equal(parsePkcs11Uri('PKCS11:token=x').token, 'x');
});

t.test('format then parse returns the same attributes, with unusual characters', async (t) => {
  const original = {
    token: 'tök en;/?&=#%', serial: '0123abcd', object: 'web server key (2026)', type: 'private' as const,
    id: Buffer.from([0x00, 0xff, 0x25, 0x3b, 0x20]), slotId: 42, modulePath: '/opt/hsm/lib pkcs11.so',
  };
  const text = formatPkcs11Uri(original);
  t.notMatch(text, / /, 'no raw spaces');
  t.same(parsePkcs11Uri(text), original);
});

t.test('format encodes every id byte and keeps safe label characters readable', async (t) => {
  const text = formatPkcs11Uri({ token: 'My-Token_1.0~', object: 'a:b', id: Buffer.from('AB') });
  t.equal(text, 'pkcs11:token=My-Token_1.0~;object=a:b;id=%41%42');
});

t.test('format puts module attributes in the query part', async (t) => {
  t.equal(formatPkcs11Uri({ token: 't', moduleName: 'softhsm2' }), 'pkcs11:token=t?module-name=softhsm2');
});

t.test('vendor attributes survive a round trip', async (t) => {
  const uri = parsePkcs11Uri('pkcs11:token=t;x-vendor=v%20w?x-q=1');
  t.same(uri.extra, { 'x-vendor': 'v w' });
  t.same(uri.extraQuery, { 'x-q': '1' });
  t.same(parsePkcs11Uri(formatPkcs11Uri(uri)), uri);
});

t.test('rejects text without the pkcs11: scheme', async (t) => {
  t.throws(() => parsePkcs11Uri('file:/etc/key.pem'), { code: 'ENGINE_ERR_PKCS11_URI', message: /does not start with "pkcs11:"/ });
});

t.test('rejects a malformed percent-encoding', async (t) => {
  t.throws(() => parsePkcs11Uri('pkcs11:id=%4'), { code: 'ENGINE_ERR_PKCS11_URI', message: /percent-encoding in "id"/ });
  t.throws(() => parsePkcs11Uri('pkcs11:id=%zz'), { code: 'ENGINE_ERR_PKCS11_URI' });
});

t.test('rejects a raw space, which must be percent-encoded', async (t) => {
  t.throws(() => parsePkcs11Uri('pkcs11:token=a b'), { message: /must be percent-encoded/ });
});

t.test('rejects an attribute given twice', async (t) => {
  t.throws(() => parsePkcs11Uri('pkcs11:token=a;token=b'), { message: /appears twice/ });
});

t.test('rejects an attribute without a value separator', async (t) => {
  t.throws(() => parsePkcs11Uri('pkcs11:token'), { message: /not name=value/ });
});

t.test('rejects an unknown object type and a non-numeric slot id', async (t) => {
  t.throws(() => parsePkcs11Uri('pkcs11:type=sekret'), { message: /type must be one of/ });
  t.throws(() => parsePkcs11Uri('pkcs11:slot-id=0x1'), { message: /slot-id must be a decimal number/ });
});

t.test('rejects text values that are not UTF-8', async (t) => {
  t.throws(() => parsePkcs11Uri('pkcs11:token=%FF'), { message: /not valid UTF-8/ });
});
