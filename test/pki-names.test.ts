// What users type for subjects and subjectAltNames: parsed exactly, or refused with a message
// that names the bad part.
import t from 'tap';
import { parseSans, parseSubject } from '../src/pki/index.js';

t.test('a subject lists the most specific RDN first and is stored in DER order', async (t) => {
  t.same(parseSubject('CN=example.com,O=Example Ltd,C=GB'), [{ C: ['GB'] }, { O: ['Example Ltd'] }, { CN: ['example.com'] }]);
});

t.test('subject values honour RFC 4514 escapes: \\, \\+ \\= \\\\ and hex pairs', async (t) => {
  t.same(parseSubject('CN=Smith\\, John,O=A\\+B\\=C\\\\D'), [{ O: ['A+B=C\\D'] }, { CN: ['Smith, John'] }]);
  t.same(parseSubject('CN=caf\\C3\\A9'), [{ CN: ['café'] }]);
  t.same(parseSubject(' CN = spaced , OU = x '), [{ OU: ['x'] }, { CN: ['spaced'] }], 'spaces around types and values are trimmed');
});

t.test('a multi-valued RDN joins attributes with +', async (t) => {
  t.same(parseSubject('CN=a+UID=b,O=x'), [{ O: ['x'] }, { CN: ['a'], '0.9.2342.19200300.100.1.1': ['b'] }]);
});

t.test('attribute types are case-insensitive and dotted OIDs are accepted', async (t) => {
  t.same(parseSubject('cn=a,emailAddress=a@b.c,2.5.4.5=1234'), [{ '2.5.4.5': ['1234'] }, { E: ['a@b.c'] }, { CN: ['a'] }]);
});

t.test('bad subjects are refused with PKI_ERR_SUBJECT naming the problem', async (t) => {
  const bad: Array<[string, RegExp]> = [
    ['', /it is empty/],
    ['CN', /"CN" is not TYPE=value/],
    ['CN=a,XX=b', /unknown attribute type "XX"/],
    ['CN=', /CN has an empty value/],
    ['C=GBR', /two-letter country code/],
    ['CN=a\\q', /bad escape "\\q"/],
    ['CN=\\FF', /valid UTF-8/],
    ['CN=say "hi"', /double quote must be escaped/],
  ];
  for (const [subject, msg] of bad) t.throws(() => parseSubject(subject), { code: 'PKI_ERR_SUBJECT', message: msg }, JSON.stringify(subject));
});

t.test('SAN entries of every supported type, comma-separated or repeated', async (t) => {
  t.same(parseSans(['DNS:Example.com,DNS:*.example.com', 'IP:127.0.0.1,IP:::1,IP:[2001:db8::1]', 'email:a@example.com', 'URI:https://example.com/x']), [
    { type: 'dns', value: 'example.com' },
    { type: 'dns', value: '*.example.com' },
    { type: 'ip', value: '127.0.0.1' },
    { type: 'ip', value: '::1' },
    { type: 'ip', value: '2001:db8::1' },
    { type: 'email', value: 'a@example.com' },
    { type: 'url', value: 'https://example.com/x' },
  ]);
});

t.test('bad SAN entries are refused with PKI_ERR_SAN naming the entry', async (t) => {
  const bad: Array<[string, RegExp]> = [
    ['FOO:bar', /"FOO:bar": unknown SAN type "FOO"/],
    ['example.com', /no TYPE: prefix/],
    ['DNS:', /value is empty/],
    ['DNS:exa_mple.com', /not a valid DNS name/],
    ['DNS:*.com', /not a valid DNS name/],
    ['IP:300.1.1.1', /not an IPv4 or IPv6 address/],
    ['email:nobody', /not an email address/],
    ['URI:not a uri', /not an absolute URI/],
  ];
  for (const [entry, msg] of bad) t.throws(() => parseSans([entry]), { code: 'PKI_ERR_SAN', message: msg }, entry);
});
