// A config that is not valid YAML: one message with the line and column of the problem (on a
// line the file has), what is wrong, and nothing after it (the parser's own "at line L,
// column C:" left a dangling colon and repeated the place, one line past an unclosed bracket).
import t from 'tap';
import { parseConfig } from '../src/config/index.js';

function syntaxError(text: string): string {
  try {
    parseConfig(text, { source: 'c.yaml' });
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error('parsed');
}

t.test('an unclosed bracket is reported where the text ends, on its last line', async (t) => {
  const m = syntaxError('listeners:\n  - port: 8443\n    certificates: [{ cert: a.pem, key: b.pem }\n');
  t.match(m, /^c\.yaml: not valid YAML: line 3, column \d+: Flow sequence .* end with a \]$/);
});

t.test('no dangling colon, and the position is said once', async (t) => {
  for (const text of ['a: 1\na: 2\n', 'listeners:\n\t- port: 1\n', 'routes: [\n']) {
    const m = syntaxError(text);
    t.notMatch(m, /:\s*$/, `${JSON.stringify(text)}: ${m}`);
    t.equal(m.match(/line \d+/g)?.length, 1, 'one position');
  }
  t.match(syntaxError('a: 1\na: 2\n'), /line 2, column 1: Map keys must be unique$/);
  t.match(syntaxError('listeners:\n\t- port: 1\n'), /line 2, column 1: Tabs are not allowed as indentation$/);
});
