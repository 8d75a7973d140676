// @ts-check
// markdown.js: a small Markdown renderer for untrusted text (model output).
//
// Safe by construction: the parser never produces HTML. It builds a tree of plain
// objects ({tag, attrs, children} or strings) from a fixed set of tags, and toDOM turns
// that tree into nodes with createElement / createTextNode, checking the tag and every
// attribute against an allow-list again. HTML in the input is text. Links keep only
// absolute http:, https: and mailto: URLs; anything else (javascript:, data:, relative
// paths) is shown as the literal Markdown source. Images are shown as links, never
// loaded (no tracking pixels, no requests made by model output).
//
// Covered: paragraphs (single newlines are line breaks, as chat users expect), ATX
// headings, fenced code blocks (an unclosed fence runs to the end: streaming), indented
// lists (bullet and ordered, nested), blockquotes, thematic breaks, GFM tables, and
// inline code, **strong**, *em*, ~~strike~~, links, <autolinks> and bare URLs.

/**
 * @typedef {{tag: string, attrs?: Record<string, string>, children: MdNode[]}} MdElement
 * @typedef {MdElement | string} MdNode
 * @typedef {{src: string, node: MdElement}} MdBlock  a top-level block and its source
 */

const FENCE = /^ {0,3}(`{3,}|~{3,})[ \t]*([^\s`]*)[^`]*$/;
const HEADING = /^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$/;
const HR = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
const QUOTE = /^ {0,3}> ?(.*)$/;
const ITEM = /^( {0,3})([-*+]|\d{1,9}[.)])(?:[ \t]+(.*)|$)/;
const TABLE_RULE = /^ {0,3}\|?[ \t]*:?-+:?[ \t]*(?:\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*$/;
const BLANK = /^[ \t]*$/;
const LANG = /^[\w+#.-]{1,32}$/;

/**
 * Parse Markdown into top-level blocks (each with its source, so that a re-render while
 * streaming can keep the DOM of the blocks that did not change).
 * @param {string} src
 * @returns {MdBlock[]}
 */
export function parseMarkdown(src) {
  return parseBlocks(src.split(/\r\n|\r|\n/));
}

/**
 * @param {string} tag
 * @param {MdNode[]} children
 * @param {Record<string, string>} [attrs]
 * @returns {MdElement}
 */
function el(tag, children, attrs) {
  return attrs ? { tag, attrs, children } : { tag, children };
}

/**
 * @param {string[]} lines
 * @returns {MdBlock[]}
 */
function parseBlocks(lines) {
  /** @type {MdBlock[]} */
  const blocks = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (BLANK.test(line)) {
      i += 1;
      continue;
    }
    const start = i;
    /** @type {MdElement} */
    let node;
    let m;
    if ((m = FENCE.exec(line))) {
      const fence = m[1];
      const lang = m[2];
      const indent = line.length - line.trimStart().length;
      const body = [];
      i += 1;
      while (i < lines.length) {
        const close = lines[i].trim();
        if (close.length >= fence.length && close[0] === fence[0] && close === close[0].repeat(close.length)) {
          i += 1;
          break;
        }
        body.push(stripIndent(lines[i], indent));
        i += 1;
      }
      node = codeBlock(body.join('\n'), lang);
    } else if ((m = HEADING.exec(line))) {
      node = el(`h${m[1].length}`, parseInline(m[2] ?? ''));
      i += 1;
    } else if (HR.test(line)) {
      node = el('hr', []);
      i += 1;
    } else if (QUOTE.test(line)) {
      const inner = [];
      while (i < lines.length && !BLANK.test(lines[i])) {
        const q = QUOTE.exec(lines[i]);
        if (!q && startsBlock(lines[i])) break;
        inner.push(q ? q[1] : lines[i]);
        i += 1;
      }
      node = el('blockquote', parseBlocks(inner).map((b) => b.node));
    } else if (ITEM.test(line)) {
      [node, i] = parseList(lines, i);
    } else if (line.includes('|') && i + 1 < lines.length && TABLE_RULE.test(lines[i + 1]) && lines[i + 1].includes('-')) {
      [node, i] = parseTable(lines, i);
    } else {
      const para = [];
      while (i < lines.length && !BLANK.test(lines[i]) && (i === start || !startsBlock(lines[i]))) {
        para.push(lines[i].trim());
        i += 1;
      }
      node = el('p', parseInline(para.join('\n')));
    }
    blocks.push({ src: lines.slice(start, i).join('\n'), node });
  }
  return blocks;
}

/** @param {string} line */
function startsBlock(line) {
  return FENCE.test(line) || HEADING.test(line) || HR.test(line) || QUOTE.test(line) || ITEM.test(line);
}

/**
 * @param {string} line
 * @param {number} n
 */
function stripIndent(line, n) {
  let k = 0;
  while (k < n && line[k] === ' ') k += 1;
  return line.slice(k);
}

/**
 * @param {string} code
 * @param {string} lang
 * @returns {MdElement}
 */
function codeBlock(code, lang) {
  const safeLang = LANG.test(lang) ? lang : '';
  const attrs = safeLang ? { 'data-lang': safeLang } : undefined;
  return el('pre', [el('code', [code], attrs)], attrs);
}

/**
 * A list starting at lines[i]: items of the same kind; lines indented past the marker
 * (and blank lines followed by such lines) belong to the item and are parsed as blocks.
 * @param {string[]} lines
 * @param {number} i
 * @returns {[MdElement, number]}
 */
function parseList(lines, i) {
  const first = /** @type {RegExpExecArray} */ (ITEM.exec(lines[i]));
  const ordered = /\d/.test(first[2]);
  const marker = ordered ? first[2].slice(-1) : first[2];
  /** @type {MdNode[]} */
  const items = [];
  let loose = false;
  while (i < lines.length) {
    const m = ITEM.exec(lines[i]);
    if (!m || /\d/.test(m[2]) !== ordered || (ordered ? m[2].slice(-1) : m[2]) !== marker) break;
    const width = m[1].length + m[2].length + 1;
    const body = [m[3] ?? ''];
    i += 1;
    while (i < lines.length) {
      const line = lines[i];
      if (BLANK.test(line)) {
        let j = i;
        while (j < lines.length && BLANK.test(lines[j])) j += 1;
        if (j < lines.length && indentOf(lines[j]) >= Math.min(width, 4)) {
          loose = true;
          for (; i < j; i += 1) body.push('');
          continue;
        }
        break;
      }
      if (indentOf(line) >= Math.min(width, 4)) {
        body.push(stripIndent(line, width));
      } else if (ITEM.test(line) || startsBlock(line)) {
        break;
      } else {
        body.push(line.trim()); // a lazy continuation line
      }
      i += 1;
    }
    let j = i;
    while (j < lines.length && BLANK.test(lines[j])) j += 1;
    const next = j < lines.length ? ITEM.exec(lines[j]) : null;
    const continues = next !== null && j > i && /\d/.test(next[2]) === ordered;
    const inner = parseBlocks(body).map((b) => b.node);
    items.push(el('li', inner));
    if (continues) {
      loose = true;
      i = j;
    }
  }
  if (!loose) {
    // Tight list: paragraphs inside items render without <p>.
    for (const item of items) {
      if (typeof item === 'string') continue;
      item.children = item.children.flatMap((c) => (typeof c !== 'string' && c.tag === 'p' ? c.children : [c]));
    }
  }
  /** @type {Record<string, string> | undefined} */
  let attrs;
  const startNum = ordered ? parseInt(first[2], 10) : 1;
  if (ordered && startNum !== 1) attrs = { start: String(startNum) };
  return [el(ordered ? 'ol' : 'ul', items, attrs), i];
}

/** @param {string} line */
function indentOf(line) {
  let n = 0;
  for (const ch of line) {
    if (ch === ' ') n += 1;
    else if (ch === '\t') n += 4;
    else break;
  }
  return n;
}

/**
 * @param {string} line
 * @returns {string[]}
 */
function cells(line) {
  let s = line.trim();
  if (s.startsWith('|')) s = s.slice(1);
  if (s.endsWith('|') && !s.endsWith('\\|')) s = s.slice(0, -1);
  const out = [];
  let cur = '';
  for (let k = 0; k < s.length; k += 1) {
    if (s[k] === '\\' && s[k + 1] === '|') {
      cur += '|';
      k += 1;
    } else if (s[k] === '|') {
      out.push(cur.trim());
      cur = '';
    } else {
      cur += s[k];
    }
  }
  out.push(cur.trim());
  return out;
}

/**
 * @param {string[]} lines
 * @param {number} i
 * @returns {[MdElement, number]}
 */
function parseTable(lines, i) {
  const head = cells(lines[i]);
  const aligns = cells(lines[i + 1]).map((c) =>
    c.startsWith(':') && c.endsWith(':') ? 'center' : c.endsWith(':') ? 'right' : c.startsWith(':') ? 'left' : '',
  );
  /**
   * @param {string} text
   * @param {number} k
   * @param {string} tag
   */
  const cell = (text, k, tag) => el(tag, parseInline(text), aligns[k] ? { class: `align-${aligns[k]}` } : undefined);
  const thead = el('thead', [el('tr', head.map((c, k) => cell(c, k, 'th')))]);
  const rows = [];
  i += 2;
  while (i < lines.length && !BLANK.test(lines[i]) && lines[i].includes('|')) {
    const row = cells(lines[i]);
    rows.push(el('tr', head.map((_, k) => cell(row[k] ?? '', k, 'td'))));
    i += 1;
  }
  return [el('table', rows.length ? [thead, el('tbody', rows)] : [thead]), i];
}

// ---- inline ------------------------------------------------------------------------

const SPECIAL = /[\\`*_~[!<\n]|https?:\/\//g;
const PUNCT = /[!-/:-@[-`{-~]/;
const AUTOLINK = /^<((?:https?:\/\/|mailto:)[^\s<>]+)>/;
const BARE_URL = /^https?:\/\/[^\s<>]*[^\s<>.,:;"'!?)\]}*_~]/;
const WORD = /[\p{L}\p{N}]/u;

/**
 * Parse inline Markdown into nodes.
 * @param {string} text
 * @returns {MdNode[]}
 */
export function parseInline(text) {
  /** @type {MdNode[]} */
  const out = [];
  /** Per delimiter: no closer exists after this index (the search is not repeated). */
  /** @type {Map<string, number>} */
  const unclosed = new Map();
  let plain = '';
  const push = (/** @type {MdNode} */ node) => {
    if (plain) out.push(plain);
    plain = '';
    out.push(node);
  };
  let i = 0;
  while (i < text.length) {
    SPECIAL.lastIndex = i;
    const m = SPECIAL.exec(text);
    if (!m) {
      plain += text.slice(i);
      break;
    }
    plain += text.slice(i, m.index);
    i = m.index;
    const ch = text[i];
    if (ch === '\\' && i + 1 < text.length && PUNCT.test(text[i + 1])) {
      plain += text[i + 1];
      i += 2;
    } else if (ch === '\n') {
      push(el('br', []));
      i += 1;
    } else if (ch === '`') {
      let n = 1;
      while (text[i + n] === '`') n += 1;
      const ticks = '`'.repeat(n);
      let close = text.indexOf(ticks, i + n);
      while (close !== -1 && text[close + n] === '`') {
        let k = close;
        while (text[k] === '`') k += 1;
        close = text.indexOf(ticks, k);
      }
      if (close === -1) {
        plain += ticks;
        i += n;
      } else {
        let code = text.slice(i + n, close).replace(/\n/g, ' ');
        if (code.length > 2 && code[0] === ' ' && code.at(-1) === ' ' && code.trim()) code = code.slice(1, -1);
        push(el('code', [code]));
        i = close + n;
      }
    } else if (ch === '*' || ch === '_' || ch === '~') {
      const r = emphasis(text, i, unclosed);
      if (r) {
        push(r[0]);
        i = r[1];
      } else {
        let k = i;
        while (text[k] === ch) k += 1;
        plain += text.slice(i, k);
        i = k;
      }
    } else if (ch === '[' || (ch === '!' && text[i + 1] === '[')) {
      const r = link(text, i);
      if (r) {
        push(r[0]);
        i = r[1];
      } else {
        plain += ch;
        i += 1;
      }
    } else if (ch === '<') {
      const a = AUTOLINK.exec(text.slice(i));
      const href = a ? safeHref(a[1]) : null;
      if (a && href) {
        push(el('a', [a[1]], { href }));
        i += a[0].length;
      } else {
        plain += '<';
        i += 1;
      }
    } else if (ch === 'h') {
      const before = i > 0 ? text[i - 1] : ' ';
      const u = WORD.test(before) ? null : BARE_URL.exec(text.slice(i));
      const href = u ? safeHref(u[0]) : null;
      if (u && href) {
        push(el('a', [u[0]], { href }));
        i += u[0].length;
      } else {
        plain += 'h';
        i += 1;
      }
    } else {
      plain += ch;
      i += 1;
    }
  }
  if (plain) out.push(plain);
  return out;
}

/**
 * `**strong**`, `__strong__`, `*em*`, `_em_`, `~~del~~` starting at text[i]. Whether an
 * index can close a delimiter does not depend on where it opened, so a search that found
 * no closer is remembered in `unclosed`: hostile input stays linear.
 * @param {string} text
 * @param {number} i
 * @param {Map<string, number>} unclosed
 * @returns {[MdElement, number] | null}
 */
function emphasis(text, i, unclosed) {
  const ch = text[i];
  let n = 0;
  while (text[i + n] === ch) n += 1;
  if (ch === '~' && n !== 2) return null;
  const size = ch === '~' ? 2 : n >= 2 ? 2 : 1;
  const delim = ch.repeat(size);
  if (i >= (unclosed.get(delim) ?? Infinity)) return null;
  const after = text[i + size];
  if (after === undefined || /\s/.test(after)) return null;
  // Intraword underscores (snake_case) are not emphasis.
  if (ch === '_' && i > 0 && WORD.test(text[i - 1])) return null;
  let from = i + size + 1;
  for (;;) {
    const close = text.indexOf(delim, from);
    if (close === -1) {
      unclosed.set(delim, Math.min(i, unclosed.get(delim) ?? Infinity));
      return null;
    }
    const prev = text[close - 1];
    const next = text[close + size];
    const fits = !/\s/.test(prev) && (ch !== '_' || next === undefined || !WORD.test(next));
    // For a single delimiter, skip a double one (it closes something else).
    const exact = size === 2 || next !== ch || text[close + 2] === ch;
    if (fits && exact && !(size === 1 && prev === ch)) {
      const tag = ch === '~' ? 'del' : size === 2 ? 'strong' : 'em';
      return [el(tag, parseInline(text.slice(i + size, close))), close + size];
    }
    from = close + 1;
  }
}

/**
 * `[text](url "title")` or `![alt](url)` starting at text[i]. An unsafe URL is not a link:
 * the caller shows the source as text.
 * @param {string} text
 * @param {number} i
 * @returns {[MdElement, number] | null}
 */
function link(text, i) {
  const image = text[i] === '!';
  const open = image ? i + 1 : i;
  let depth = 0;
  let k = open;
  const limit = Math.min(text.length, open + 2000); // labels are short; keeps "[[[[..." linear
  for (; k < limit; k += 1) {
    if (text[k] === '\\') k += 1;
    else if (text[k] === '[') depth += 1;
    else if (text[k] === ']' && --depth === 0) break;
  }
  if (k >= limit || text[k + 1] !== '(') return null;
  const rest = text.slice(k + 2);
  const m = /^[ \t]*<?([^\s()<>]*(?:\([^\s()<>]*\)[^\s()<>]*)*)>?(?:[ \t]+"([^"]*)")?[ \t]*\)/.exec(rest);
  if (!m) return null;
  const href = safeHref(m[1]);
  if (!href) return null;
  const label = text.slice(open + 1, k);
  const end = k + 2 + m[0].length;
  /** @type {Record<string, string>} */
  const attrs = { href };
  if (m[2]) attrs.title = m[2];
  if (image) return [el('a', [label ? `🖼 ${label}` : '🖼 image'], { ...attrs, class: 'md-image' }), end];
  return [el('a', parseInline(label).filter((n) => typeof n === 'string' || n.tag !== 'a'), attrs), end];
}

/**
 * The URL if it is absolute and http:, https: or mailto:, else null.
 * @param {string} url
 * @returns {string | null}
 */
export function safeHref(url) {
  // eslint-disable-next-line no-control-regex
  if (!url || /[\u0000-\u0020\u007f]/.test(url)) return null;
  let parsed;
  try {
    parsed = new URL(url);
  } catch {
    return null;
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:' && parsed.protocol !== 'mailto:') return null;
  return parsed.href;
}

// ---- DOM -----------------------------------------------------------------------------

/** The only tags and attributes toDOM creates. */
const TAGS = new Set([
  'p', 'h1', 'h2', 'h3', 'h4', 'h5', 'h6', 'pre', 'code', 'blockquote', 'ul', 'ol', 'li',
  'hr', 'br', 'table', 'thead', 'tbody', 'tr', 'th', 'td', 'strong', 'em', 'del', 'a',
]);
const ATTRS = new Set(['href', 'title', 'start', 'class', 'data-lang']);
const CLASSES = new Set(['align-left', 'align-center', 'align-right', 'md-image']);

/**
 * Build DOM nodes for a parsed tree. Tags and attributes outside the allow-lists are
 * dropped (the text is kept); every string becomes a text node.
 * @param {MdNode} node
 * @param {Document} [doc]
 * @returns {Node}
 */
export function toDOM(node, doc = document) {
  if (typeof node === 'string') return doc.createTextNode(node);
  if (!TAGS.has(node.tag)) {
    const frag = doc.createDocumentFragment();
    for (const child of node.children) frag.append(toDOM(child, doc));
    return frag;
  }
  const elem = doc.createElement(node.tag);
  for (const [name, value] of Object.entries(node.attrs ?? {})) {
    if (!ATTRS.has(name)) continue;
    if (name === 'href') {
      const href = safeHref(value);
      if (!href) continue;
      elem.setAttribute('href', href);
      elem.setAttribute('rel', 'noopener noreferrer nofollow');
      elem.setAttribute('target', '_blank');
    } else if (name === 'class') {
      if (CLASSES.has(value)) elem.className = value;
    } else if (name === 'start') {
      if (/^\d{1,9}$/.test(value)) elem.setAttribute('start', value);
    } else if (name === 'data-lang') {
      if (LANG.test(value)) elem.setAttribute('data-lang', value);
    } else {
      elem.setAttribute(name, value);
    }
  }
  for (const child of node.children) elem.append(toDOM(child, doc));
  return elem;
}

/**
 * Render Markdown into `container`, reusing the DOM of leading blocks whose source did
 * not change since the last call (while a reply streams, only its last block changes).
 * `decorate(element, block)` runs on each newly built top-level element and may return
 * an element to insert instead (the chat page wraps code blocks with a copy button).
 * @param {Element} container
 * @param {string} src
 * @param {(element: Element, block: MdBlock) => Element | void} [decorate]
 */
export function renderMarkdown(container, src, decorate) {
  const blocks = parseMarkdown(src);
  const kept = /** @type {Array<Element & {mdSrc?: string}>} */ (Array.from(container.children));
  let same = 0;
  while (same < blocks.length && same < kept.length && kept[same].mdSrc === blocks[same].src) same += 1;
  for (let k = kept.length - 1; k >= same; k -= 1) kept[k].remove();
  for (const block of blocks.slice(same)) {
    const built = /** @type {Element} */ (toDOM(block.node, container.ownerDocument));
    const elem = /** @type {Element & {mdSrc?: string}} */ (decorate?.(built, block) || built);
    elem.mdSrc = block.src;
    container.append(elem);
  }
}
