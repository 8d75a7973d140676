// markdown.js renders untrusted model output: the tree it builds may only hold allowed
// tags, attributes from a fixed set, and http(s)/mailto links. HTML in the input is text.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { parseInline, parseMarkdown, safeHref } from '../../src/tokenrelay/web/markdown.js';

const TAGS = new Set([
  'p', 'h1', 'h2', 'h3', 'h4', 'h5', 'h6', 'pre', 'code', 'blockquote', 'ul', 'ol', 'li',
  'hr', 'br', 'table', 'thead', 'tbody', 'tr', 'th', 'td', 'strong', 'em', 'del', 'a',
]);

/**
 * Every element of a parsed document, depth first.
 * @param {any[]} nodes
 * @returns {any[]}
 */
function elements(nodes) {
  return nodes.flatMap((n) => (typeof n === 'string' ? [] : [n, ...elements(n.children)]));
}

/** @param {any} node @returns {string} */
function text(node) {
  if (typeof node === 'string') return node;
  if (Array.isArray(node)) return node.map(text).join('');
  return text(node.children);
}

/** @param {string} src */
const doc = (src) => parseMarkdown(src).map((b) => b.node);

/** @param {string} src */
function assertSafe(src) {
  for (const el of elements(doc(src))) {
    assert.ok(TAGS.has(el.tag), `tag ${el.tag}`);
    for (const [name, value] of Object.entries(el.attrs ?? {})) {
      assert.ok(['href', 'title', 'start', 'class', 'data-lang'].includes(name), `attribute ${name}`);
      if (name === 'href') assert.match(value, /^(https?:|mailto:)/, 'link protocol');
    }
  }
}

const PAYLOADS = [
  '<img src=x onerror="window.__xss=1"> [x](javascript:alert(1)) <script>window.__xss=2</script>',
  '[a](JaVaScRiPt:alert(1)) [b]( javascript:alert(1)) [c](java\tscript:alert(1)) [d](&#106;avascript:alert(1))',
  '[e](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==) ![f](javascript:alert(1)) <javascript:alert(1)>',
  '[g](vbscript:msgbox(1)) [h](/relative) [i](//evil.example/x) [j](#top) [k](file:///etc/passwd)',
  '<a href="javascript:alert(1)">x</a> <svg onload=alert(1)> <iframe src=javascript:alert(1)>',
  '```html\n<script>alert(1)</script>\n```\n| <b onclick=x>h</b> |\n|---|\n| <i>x</i> |',
  '> <style>*{}</style>\n- <object data=x>\n1. [l](https://ok.example/"onmouseover="alert(1))',
  '```" onmouseover="alert(1)\ncode\n```',
];

test('payloads: only allowed tags and attributes, only http(s)/mailto links', () => {
  for (const p of PAYLOADS) assertSafe(p);
});

test('HTML is shown as text, unsafe links as their Markdown source', () => {
  const [para] = doc(PAYLOADS[0]);
  assert.equal(text(para), PAYLOADS[0]);
  assert.equal(elements([para]).filter((e) => e.tag === 'a').length, 0);
});

test('safeHref keeps absolute http, https and mailto URLs only', () => {
  assert.equal(safeHref('https://example.com/a?b=c#d'), 'https://example.com/a?b=c#d');
  assert.equal(safeHref('mailto:a@example.com'), 'mailto:a@example.com');
  for (const bad of ['javascript:alert(1)', ' javascript:alert(1)', 'JAVASCRIPT:x', 'data:text/html,x', '/x', '//x.example', 'x', 'java\nscript:x', '']) {
    assert.equal(safeHref(bad), null, bad);
  }
});

test('blocks: headings, paragraphs with line breaks, code, lists, quotes, rules, tables', () => {
  const src = [
    '# Title', '', 'one **bold** and *em*', 'next line', '', '```py', 'print("<b>")', '', 'x = 1', '```',
    '- a', '- b with `code`', '  - nested', '', '1. first', '2. second', '', '> quoted', '', '---', '',
    '| h1 | h2 |', '|:--|--:|', '| a | b |',
  ].join('\n');
  const nodes = doc(src);
  assert.deepEqual(nodes.map((n) => n.tag), ['h1', 'p', 'pre', 'ul', 'ol', 'blockquote', 'hr', 'table']);
  assert.deepEqual(nodes[1].children.map((c) => (typeof c === 'string' ? c : c.tag)), ['one ', 'strong', ' and ', 'em', 'br', 'next line']);
  assert.equal(text(nodes[2]), 'print("<b>")\n\nx = 1');
  assert.equal(nodes[2].children[0].attrs['data-lang'], 'py');
  assert.equal(elements([nodes[3]]).filter((e) => e.tag === 'ul').length, 2, 'a nested list');
  assert.equal(nodes[7].children[0].children[0].children[1].attrs.class, 'align-right');
});

test('an unclosed code fence runs to the end (a reply still streaming)', () => {
  const nodes = doc('look:\n```js\nconst a = 1;\nconst b');
  assert.deepEqual(nodes.map((n) => n.tag), ['p', 'pre']);
  assert.equal(text(nodes[1]), 'const a = 1;\nconst b');
});

test('inline: code spans keep their content literally, snake_case is not emphasis, bare URLs link', () => {
  assert.deepEqual(parseInline('`<b>**x**</b>`'), [{ tag: 'code', children: ['<b>**x**</b>'] }]);
  assert.deepEqual(parseInline('snake_case_name'), ['snake_case_name']);
  assert.deepEqual(parseInline('2 * 3 * 4'), ['2 * 3 * 4']);
  const linked = parseInline('see https://example.com/x.');
  assert.equal(typeof linked[1] === 'object' && linked[1].attrs?.href, 'https://example.com/x');
  assert.equal(linked[2], '.');
  assert.deepEqual(parseInline('\\*not em\\*'), ['*not em*']);
});

test('block sources let a re-render keep unchanged blocks', () => {
  const a = parseMarkdown('para one\n\npara tw');
  const b = parseMarkdown('para one\n\npara two');
  assert.equal(a[0].src, b[0].src);
  assert.notEqual(a[1].src, b[1].src);
});

test('large inputs render in linear-ish time (no pathological backtracking)', () => {
  const started = performance.now();
  doc('*'.repeat(20000));
  doc('['.repeat(5000) + ']('.repeat(5000));
  doc('`'.repeat(5000));
  doc('_a '.repeat(5000));
  doc(`${'a'.repeat(20000)}\n`.repeat(5));
  assert.ok(performance.now() - started < 3000, `took ${performance.now() - started} ms`);
});
