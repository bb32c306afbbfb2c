// The chat page's Markdown renderer on its own (node's test runner, no browser).
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const { renderMarkdown: md } = require('../../crates/tuili-server/assets/chat.js');

test('markup in the text stays text', () => {
  assert.equal(md('<script>alert(1)</script> & "x"'), '<p>&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;x&quot;</p>');
  assert.equal(md('[a](javascript:alert(1))'), '<p>[a](javascript:alert(1))</p>');
  assert.equal(md('[a "b"](https://x.org/?q=1&r=2)'),
    '<p><a href="https://x.org/?q=1&amp;r=2" target="_blank" rel="noopener noreferrer">a &quot;b&quot;</a></p>');
});

test('emphasis, code spans and line breaks', () => {
  assert.equal(md('**bold** and *it* and `a*b*c` and ~~no~~'),
    '<p><strong>bold</strong> and <em>it</em> and <code>a*b*c</code> and <del>no</del></p>');
  assert.equal(md('2 * 3 * 4 and snake_case_name'), '<p>2 * 3 * 4 and snake_case_name</p>');
  assert.equal(md('one\ntwo'), '<p>one<br>two</p>');
  assert.equal(md('``a `b` c``'), '<p><code>a `b` c</code></p>');
});

test('fenced code, closed or still streaming', () => {
  const code = (lang, body) => `<div class="code"><div class="code-head"><span class="lang">${lang}</span>` +
    `<button type="button" class="copy">Copy</button></div><pre><code>${body}</code></pre></div>`;
  assert.equal(md('Look:\n```rust\nfn main() { a < b }\n```\nDone.'),
    '<p>Look:</p>' + code('rust', 'fn main() { a &lt; b }') + '<p>Done.</p>');
  assert.equal(md('```\nx = 1\n\ny = 2'), code('code', 'x = 1\n\ny = 2'));
  assert.equal(md('~~~~\n```\n~~~~'), code('code', '```'));
});

test('headings, rules, quotes and tables', () => {
  assert.equal(md('# Title #\n## Sub\ntext'), '<h1>Title</h1><h2>Sub</h2><p>text</p>');
  assert.equal(md('a\n\n---\n\nb'), '<p>a</p><hr><p>b</p>');
  assert.equal(md('> quoted **x**\n> more'), '<blockquote><p>quoted <strong>x</strong><br>more</p></blockquote>');
  assert.equal(md('| a | b |\n|:-|:-:|\n| 1 | `|` |'.replace('`|`', 'c')),
    '<table><thead><tr><th>a</th><th class="center">b</th></tr></thead><tbody><tr><td>1</td><td class="center">c</td></tr></tbody></table>');
});

test('lists: ordered, nested, loose, with code', () => {
  assert.equal(md('- a\n- b'), '<ul><li>a</li><li>b</li></ul>');
  assert.equal(md('3. c\n4. d'), '<ol start="3"><li>c</li><li>d</li></ol>');
  assert.equal(md('- a\n  - a1\n  - a2\n- b'), '<ul><li>a<ul><li>a1</li><li>a2</li></ul></li><li>b</li></ul>');
  assert.equal(md('1. one\n\n2. two\n\nafter'), '<ol><li>one</li><li>two</li></ol><p>after</p>');
  assert.equal(md('- run:\n  ```sh\n  ls\n  ```'),
    '<ul><li>run:<div class="code"><div class="code-head"><span class="lang">sh</span><button type="button" class="copy">Copy</button></div><pre><code>ls</code></pre></div></li></ul>');
  assert.equal(md('Steps:\n1. x'), '<p>Steps:</p><ol><li>x</li></ol>');
});
