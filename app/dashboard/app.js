/*
 * app.js - the operator dashboard's logic (app/dashboard/index.html), served
 * by aigw at /dashboard/app.js. Vanilla ES2020, no framework, no build step.
 *
 * It signs in with an admin's key or token (checked by GET /admin/api/me),
 * keeps it in sessionStorage only, sends it only in the Authorization header
 * (never in a URL, no cookies), and fills the panels from the admin API
 * (docs/ADMIN_API.md). On a 401 or 403 it forgets everything and shows the
 * sign-in form again.
 *
 * Charts: plain SVG, no vendored library: a few bar/line charts do not justify
 * a dependency.
 *
 * Safety: every value that comes from the API (user ids, model and backend
 * names, reasons, error messages, request ids, ...) goes into the page with
 * textContent / createTextNode / setAttribute / dataset only. Never innerHTML,
 * insertAdjacentHTML, outerHTML or document.write: a user id such as
 * "<script>...</script>" must show as that text. The page's CSP (no inline
 * script, no eval) is the second line of defence, not the first.
 *
 * Numbers: each numeric cell keeps the API's raw value in data-value (the
 * browser test compares those with `aigw report`); the visible text may be
 * formatted. When every panel is filled for the current period,
 * document.body.dataset.ready is "1"; it is removed when a reload starts.
 */
'use strict';

(() => {
    const CREDENTIAL_KEY = 'aigw.admin.credential';
    // /dashboard or /dashboard/ -> /admin/api/ (and /x/dashboard -> /x/admin/api/
    // should a proxy ever put aigw under a prefix).
    const API = location.pathname.replace(/\/dashboard(\/.*)?$/, '') + '/admin/api/';
    const SVG_NS = 'http://www.w3.org/2000/svg';
    const PERIOD_S = { hour: 3600, day: 86400, '30d': 2592000 };
    const AUDIT_LIMIT = 50;
    const USAGE_SLACK_S = 60;

    let credential = null;
    // Bumped by every reload and by sign-out, so that an answer arriving for
    // an older reload (or after sign-out) is dropped instead of shown.
    let generation = 0;
    // The panels the reload in flight is to draw: a reload that supersedes it
    // draws them too, so that a partial reload cannot drop a full one.
    let pendingPanels = null;

    const $ = (id) => document.getElementById(id);

    /* --- building DOM without HTML strings --------------------------------- */

    // el('td', {class: 'num', data: {value: 3}}, 'three'): attributes with
    // setAttribute, data-* with dataset, children as nodes or text nodes.
    function el(tag, attrs, ...children) {
        const node = document.createElement(tag);
        setAttrs(node, attrs);
        for (const c of children) {
            if (c === null || c === undefined) continue;
            node.appendChild(typeof c === 'object' ? c : document.createTextNode(String(c)));
        }
        return node;
    }

    function svg(tag, attrs, text) {
        const node = document.createElementNS(SVG_NS, tag);
        setAttrs(node, attrs);
        if (text !== undefined) node.textContent = String(text);
        return node;
    }

    function setAttrs(node, attrs) {
        for (const [k, v] of Object.entries(attrs || {})) {
            if (v === null || v === undefined || v === false) continue;
            if (k === 'data') {
                for (const [dk, dv] of Object.entries(v)) {
                    if (dv !== null && dv !== undefined) node.dataset[dk] = String(dv);
                }
            } else {
                node.setAttribute(k, v === true ? '' : String(v));
            }
        }
    }

    function button(label, cls, onClick) {
        const b = el('button', { type: 'button', class: cls }, label);
        b.addEventListener('click', onClick);
        return b;
    }

    // A cell of buttons (the cell itself stays a table cell; a div lays them out).
    function actionsCell(...buttons) {
        return el('td', { data: { col: 'actions' } }, el('div', { class: 'actions' }, ...buttons));
    }

    /* --- cells --------------------------------------------------------------- */

    const intFormat = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });

    function isNum(v) {
        return typeof v === 'number' && Number.isFinite(v);
    }

    // A text cell; data-col names the column for tests and styles.
    function textCell(col, v, cls) {
        if (v === null || v === undefined || v === '') {
            return el('td', { class: 'null ' + (cls || ''), data: { col } }, '\u2013');
        }
        return el('td', { class: cls || null, data: { col } }, String(v));
    }

    // A numeric cell: the raw value in data-value, the visible text formatted.
    function numCell(col, v, format) {
        if (v === null || v === undefined) {
            return el('td', { class: 'num null', data: { col, value: '' } }, '\u2013');
        }
        let text;
        if (format) text = format(v);
        else if (isNum(v) && Number.isInteger(v)) text = intFormat.format(v);
        else text = String(v);
        return el('td', { class: 'num', data: { col, value: String(v) } }, text);
    }

    function badgeCell(col, v) {
        const cls = String(v ?? '').replace(/[^a-z_]/gi, '');
        return el('td', { data: { col } }, el('span', { class: 'badge ' + cls }, v ?? '\u2013'));
    }

    const pct = (v) => (isNum(v) ? (v * 100).toFixed(2) + ' %' : String(v));

    function fillBody(table, rows, columns) {
        const body = $(table).tBodies[0];
        if (!rows.length) {
            body.replaceChildren(el('tr', { class: 'empty' },
                el('td', { colspan: columns }, 'Nothing in this period')));
            return;
        }
        body.replaceChildren(...rows);
    }

    /* --- the API --------------------------------------------------------------- */

    class ApiError extends Error {
        constructor(status, message, code) {
            super(message);
            this.status = status;
            this.code = code;
        }
    }

    // One call; resolves to the parsed JSON, rejects with an ApiError that
    // carries the status and the error.message of the answer.
    async function api(path, { method = 'GET', body, cred = credential } = {}) {
        const headers = { Accept: 'application/json', Authorization: 'Bearer ' + cred };
        if (body !== undefined) headers['Content-Type'] = 'application/json';
        let resp;
        try {
            resp = await fetch(API + path, {
                method,
                headers,
                body: body === undefined ? undefined : JSON.stringify(body),
                credentials: 'omit',
                cache: 'no-store',
                redirect: 'error',
                referrerPolicy: 'no-referrer',
            });
        } catch (e) {
            throw new ApiError(0, 'the admin API cannot be reached (' + e.message + ')');
        }
        let data = null;
        try {
            data = await resp.json();
        } catch {
            data = null; // not JSON (a web server's own error page, say)
        }
        if (!resp.ok) {
            const err = data && data.error;
            throw new ApiError(resp.status,
                (err && err.message) || `HTTP ${resp.status} from ${path}`, err && err.code);
        }
        if (data === null) throw new ApiError(resp.status, `${path} did not answer JSON`);
        return data;
    }

    const isAuthError = (e) => e instanceof ApiError && (e.status === 401 || e.status === 403);

    function authMessage(e) {
        return e.status === 403 ? "This key is not an admin's: " + e.message : e.message;
    }

    /* --- periods ------------------------------------------------------------------ */

    function period() {
        return PERIOD_S[$('period').value] ? $('period').value : 'day';
    }

    // The `since` for a report. Usage is rolled up per UTC day, so for the
    // last hour it is asked from the last UTC midnight: "today".
    function sinceFor(report) {
        const p = period();
        if (report === 'usage' && p === 'hour') {
            const now = new Date();
            const midnight = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate());
            // A day counts when it starts within `since`: reach a little past
            // midnight, or today's row (which starts exactly there) drops out
            // by the time the server reads its clock. Never 0 ("everything").
            return Math.ceil((now.getTime() - midnight) / 1000) + USAGE_SLACK_S;
        }
        return PERIOD_S[p];
    }

    function describePeriods() {
        const p = period();
        $('traffic-period').textContent =
            { hour: 'hours that started in the last hour', day: 'hours that started in the last 24 h',
                '30d': 'hours that started in the last 30 days' }[p];
        $('usage-period').textContent =
            { hour: 'today (UTC): usage is kept per UTC day', day: 'UTC days that started in the last 24 h (today)',
                '30d': 'UTC days that started in the last 30 days' }[p];
    }

    /* --- sign-in and sign-out -------------------------------------------------- */

    function showSignin(message) {
        $('dashboard').hidden = true;
        $('controls').hidden = true;
        $('signin').hidden = false;
        $('signin-error').textContent = message || '';
        $('credential').focus();
    }

    function showDashboard(me) {
        $('signin').hidden = true;
        $('signin-error').textContent = '';
        $('dashboard').hidden = false;
        $('controls').hidden = false;
        $('whoami').textContent = `Signed in as ${me.user_id} (${me.via || 'credential'})`;
    }

    async function signIn(cred) {
        $('signin-error').textContent = '';
        setStatus('Signing in\u2026');
        let me;
        try {
            me = await api('me', { cred });
        } catch (e) {
            if (isAuthError(e)) forget();
            setStatus('');
            showSignin(isAuthError(e) ? authMessage(e) : 'Could not sign in: ' + e.message);
            return;
        }
        credential = cred;
        sessionStorage.setItem(CREDENTIAL_KEY, cred);
        $('credential').value = '';
        showDashboard(me);
        await reload();
    }

    // Drops the credential and every figure shown.
    function forget() {
        generation++;
        pendingPanels = null;
        credential = null;
        $('refresh').disabled = false;
        sessionStorage.removeItem(CREDENTIAL_KEY);
        clearData();
    }

    function signOut(message) {
        forget();
        setStatus(message || '', Boolean(message));
        showSignin(message);
    }

    function clearData() {
        delete document.body.dataset.ready;
        for (const t of document.querySelectorAll('main table')) {
            for (const b of t.tBodies) b.replaceChildren();
        }
        for (const id of ['chart-requests', 'chart-tokens']) $(id).replaceChildren();
        for (const id of ['total-requests', 'total-tokens']) {
            $(id).textContent = '';
            delete $(id).dataset.value;
        }
        for (const p of document.querySelectorAll('.panel-error')) {
            p.textContent = '';
            p.hidden = true;
        }
        hideNewKey();
        $('keys').hidden = true;
        $('keys-user').textContent = '';
        $('updated').textContent = '';
        $('whoami').textContent = '';
        $('users-message').textContent = '';
    }

    function setStatus(text, isError) {
        const s = $('status');
        s.textContent = text;
        s.classList.toggle('is-error', Boolean(isError));
    }

    /* --- loading ------------------------------------------------------------------ */

    function auditQuery() {
        const q = new URLSearchParams();
        q.set('since', String(PERIOD_S[period()]));
        q.set('limit', String(AUDIT_LIMIT));
        const user = $('audit-user').value.trim();
        const rid = $('audit-request-id').value.trim();
        if (user) q.set('user', user);
        if (rid) q.set('request_id', rid);
        return q;
    }

    // Lists show their newest rows; the tables the page adds up ask for all
    // (the API's most), and say so if even that was not all.
    const REPORT_LIMIT = { failovers: 500 };
    const REPORT_LIMIT_MAX = 100000;
    const report = (name) =>
        api(`reports/${encodeURIComponent(name)}?` + new URLSearchParams({
            since: String(sinceFor(name)),
            limit: String(REPORT_LIMIT[name] || REPORT_LIMIT_MAX),
        }));

    // What each panel needs, and how it is drawn once everything has come.
    const PANELS = [
        { id: 'panel-traffic', calls: { traffic: () => report('traffic') }, draw: drawTraffic },
        {
            id: 'panel-usage',
            calls: { usage: () => report('usage'), users: () => api('users') },
            draw: drawUsage,
        },
        {
            id: 'panel-backends',
            calls: { errors: () => report('errors'), latency: () => report('latency') },
            draw: drawBackends,
        },
        { id: 'panel-failovers', calls: { failovers: () => report('failovers') }, draw: drawFailovers },
        { id: 'panel-refusals', calls: { refusals: () => report('refusals') }, draw: drawRefusals },
        { id: 'panel-breakers', calls: { breakers: () => api('breakers') }, draw: drawBreakers },
        { id: 'panel-audit', calls: { audit: () => api('audit?' + auditQuery()) }, draw: drawAudit },
        { id: 'panel-users', calls: { users: () => api('users') }, draw: drawUsers },
    ];

    // Reloads the panels named (all by default). Each distinct call is made
    // once, all at once; a panel whose calls failed shows why, the others are
    // drawn. body[data-ready] is set only when every panel was drawn.
    async function reload(only) {
        if (!credential) return;
        const g = ++generation;
        delete document.body.dataset.ready;
        setStatus('loading\u2026');
        $('refresh').disabled = true;
        describePeriods();
        const want = new Set(only || PANELS.map((p) => p.id));
        for (const id of pendingPanels || []) want.add(id);
        pendingPanels = want;
        const panels = PANELS.filter((p) => want.has(p.id));
        const pending = {};
        for (const p of panels) {
            for (const [name, call] of Object.entries(p.calls)) {
                if (!pending[name]) pending[name] = call().then((v) => ({ ok: true, v }), (e) => ({ ok: false, e }));
            }
        }
        const names = Object.keys(pending);
        const settled = await Promise.all(names.map((n) => pending[n]));
        if (g !== generation) return; // a newer reload or a sign-out
        pendingPanels = null;
        $('refresh').disabled = false;
        const results = {};
        names.forEach((n, i) => { results[n] = settled[i]; });

        const authFailure = settled.find((r) => !r.ok && isAuthError(r.e));
        if (authFailure) {
            signOut(authMessage(authFailure.e));
            return;
        }
        const failures = [];
        for (const p of panels) {
            const errorBox = $(p.id).querySelector('.panel-error');
            const bad = Object.keys(p.calls).filter((n) => !results[n].ok);
            if (bad.length) {
                const text = bad.map((n) => `${n}: ${results[n].e.message}`).join('; ');
                errorBox.textContent = 'Could not load ' + text;
                errorBox.hidden = false;
                failures.push(text);
                continue;
            }
            errorBox.textContent = '';
            errorBox.hidden = true;
            const data = {};
            for (const n of Object.keys(p.calls)) data[n] = results[n].v;
            try {
                p.draw(data);
            } catch (e) {
                errorBox.textContent = 'Could not show this panel: ' + e.message;
                errorBox.hidden = false;
                failures.push(p.id + ': ' + e.message);
            }
        }
        $('updated').textContent = 'Updated ' + new Date().toTimeString().slice(0, 8);
        if (failures.length) {
            setStatus('Some panels could not be loaded: ' + failures.join('; '), true);
            return;
        }
        setStatus('');
        document.body.dataset.ready = '1';
    }

    /* --- traffic: totals and two charts --------------------------------------- */

    // "2026-12-02 03:00" (or ISO 8601) -> ms since the epoch, UTC; NaN if not a time.
    function parseHour(s) {
        const m = /^(\d{4})-(\d\d)-(\d\d)[ T](\d\d)(?::(\d\d))?/.exec(String(s ?? ''));
        return m ? Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +(m[5] || 0)) : NaN;
    }

    function hourLabel(ms, span) {
        const d = new Date(ms);
        const hh = String(d.getUTCHours()).padStart(2, '0') + ':00';
        if (span <= 24) return hh;
        return `${String(d.getUTCMonth() + 1).padStart(2, '0')}-${String(d.getUTCDate()).padStart(2, '0')}`;
    }

    function drawTraffic({ traffic }) {
        const rows = traffic.rows || [];
        let requests = 0;
        let tokens = 0;
        for (const r of rows) {
            requests += Number(r.requests) || 0;
            tokens += Number(r.total_tokens) || 0;
        }
        for (const [id, v] of [['total-requests', requests], ['total-tokens', tokens]]) {
            $(id).textContent = intFormat.format(v);
            $(id).dataset.value = String(v);
        }
        // One point per hour of the period, hours without traffic as zero.
        const HOUR = 3600 * 1000;
        const byHour = new Map();
        let parsable = true;
        for (const r of rows) {
            const t = parseHour(r.hour);
            if (Number.isNaN(t)) parsable = false;
            else byHour.set(t, r);
        }
        let points;
        if (parsable) {
            const now = Date.now();
            const last = Math.floor(now / HOUR) * HOUR;
            const first = Math.ceil((now - PERIOD_S[period()] * 1000) / HOUR) * HOUR;
            const span = Math.round((last - first) / HOUR) + 1;
            points = [];
            for (let t = Math.min(first, last); t <= last; t += HOUR) {
                const r = byHour.get(t);
                points.push({ t, label: hourLabel(t, span), when: new Date(t).toISOString().slice(0, 13) + ':00Z',
                    requests: r ? Number(r.requests) || 0 : 0, tokens: r ? Number(r.total_tokens) || 0 : 0 });
            }
        } else {
            points = rows.map((r) => ({ label: String(r.hour), when: String(r.hour),
                requests: Number(r.requests) || 0, tokens: Number(r.total_tokens) || 0 }));
        }
        $('chart-requests').replaceChildren(chart('bar', points.map((p) => ({ ...p, value: p.requests })),
            'requests', 'Requests per hour'));
        $('chart-tokens').replaceChildren(chart('line', points.map((p) => ({ ...p, value: p.tokens })),
            'tokens', 'Total tokens per hour'));
    }

    // A round number at or above v, for the top of the y axis.
    function niceCeil(v) {
        if (v <= 1) return 1;
        const p = 10 ** Math.floor(Math.log10(v));
        for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
        return 10 * p;
    }

    function compact(v) {
        if (v >= 1e6) return (v / 1e6).toFixed(v >= 1e7 ? 0 : 1) + 'M';
        if (v >= 1e4) return (v / 1e3).toFixed(0) + 'k';
        return intFormat.format(v);
    }

    // An SVG bar or line chart of points [{label, when, value}], one per hour.
    function chart(kind, points, unit, caption) {
        const W = 640, H = 200, L = 48, R = 10, T = 10, B = 26;
        const plotW = W - L - R, plotH = H - T - B;
        const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, class: `chart chart-${kind}`, role: 'img',
            'aria-label': caption, preserveAspectRatio: 'xMidYMid meet' });
        root.appendChild(svg('title', {}, caption));
        const max = points.reduce((m, p) => Math.max(m, p.value), 0);
        if (!points.length || max === 0) {
            root.appendChild(svg('line', { class: 'axis', x1: L, y1: T + plotH, x2: W - R, y2: T + plotH }));
            root.appendChild(svg('text', { class: 'empty', x: L + plotW / 2, y: T + plotH / 2 }, 'No traffic in this period'));
            return root;
        }
        const top = niceCeil(max);
        const y = (v) => T + plotH * (1 - v / top);
        for (const f of [0, 0.5, 1]) {
            const yy = y(top * f);
            root.appendChild(svg('line', { class: f === 0 ? 'axis' : 'gridline', x1: L, y1: yy, x2: W - R, y2: yy }));
            root.appendChild(svg('text', { class: 'label end', x: L - 6, y: yy + 3 }, compact(top * f)));
        }
        const step = plotW / points.length;
        const cx = (i) => L + step * (i + 0.5);
        if (kind === 'bar') {
            // Bars at most MAX_BAR wide (one hour alone is not a wall), centred.
            const MAX_BAR = 36;
            const width = Math.max(Math.min(step - 2 * Math.min(4, step * 0.15), MAX_BAR), 0.5);
            points.forEach((p, i) => {
                const h = plotH * (p.value / top);
                const bar = svg('rect', { class: 'bar', x: (cx(i) - width / 2).toFixed(2), y: (T + plotH - h).toFixed(2),
                    width: width.toFixed(2), height: h.toFixed(2) });
                bar.appendChild(svg('title', {}, `${p.when}: ${p.value} ${unit}`));
                root.appendChild(bar);
            });
        } else {
            const xy = points.map((p, i) => `${cx(i).toFixed(2)},${y(p.value).toFixed(2)}`);
            const base = (T + plotH).toFixed(2);
            root.appendChild(svg('polygon', { class: 'area',
                points: `${cx(0).toFixed(2)},${base} ${xy.join(' ')} ${cx(points.length - 1).toFixed(2)},${base}` }));
            root.appendChild(svg('polyline', { class: 'line', points: xy.join(' ') }));
            if (points.length <= 48) {
                points.forEach((p, i) => {
                    const dot = svg('circle', { class: 'dot', cx: cx(i).toFixed(2), cy: y(p.value).toFixed(2), r: 3 });
                    dot.appendChild(svg('title', {}, `${p.when}: ${p.value} ${unit}`));
                    root.appendChild(dot);
                });
            }
        }
        // A few hour labels along the bottom, evenly spread.
        const nLabels = Math.min(points.length, 6);
        const seen = new Set();
        for (let k = 0; k < nLabels; k++) {
            const i = nLabels === 1 ? 0 : Math.round(k * (points.length - 1) / (nLabels - 1));
            if (seen.has(i)) continue;
            seen.add(i);
            // With narrow steps the outermost labels are anchored inward, not cut off.
            let anchor = 'middle';
            if (step < 40 && i === 0) anchor = 'start';
            else if (step < 40 && i === points.length - 1) anchor = 'end';
            const x = anchor === 'start' ? Math.max(cx(i), L) : anchor === 'end' ? Math.min(cx(i), W - R) : cx(i);
            root.appendChild(svg('text', { class: 'label ' + anchor, x: x.toFixed(2), y: H - 8 }, points[i].label));
        }
        return root;
    }

    /* --- usage per user ----------------------------------------------------------- */

    const USAGE_SUMS = ['requests', 'succeeded', 'failed', 'refused', 'prompt_tokens', 'completion_tokens',
        'total_tokens'];

    // A user id as a key: report values are JSON numbers when the text looks
    // like one, so compare as strings.
    const userKey = (v) => (v === null || v === undefined ? '' : String(v));

    function drawUsage({ usage, users }) {
        const byUser = new Map();
        for (const r of usage.rows || []) {
            const k = userKey(r.user_id);
            let s = byUser.get(k);
            if (!s) {
                s = { user_id: k };
                for (const c of USAGE_SUMS) s[c] = 0;
                byUser.set(k, s);
            }
            for (const c of USAGE_SUMS) s[c] += Number(r[c]) || 0;
        }
        const budgets = new Map((users.users || []).map((u) => [userKey(u.user_id), u]));
        const rows = [...byUser.values()]
            .sort((a, b) => b.total_tokens - a.total_tokens || (a.user_id < b.user_id ? -1 : 1))
            .map((s) => {
                const u = budgets.get(s.user_id);
                return el('tr', { data: { user: s.user_id } },
                    textCell('user_id', s.user_id || '(none)', 'text id'),
                    ...USAGE_SUMS.map((c) => numCell(c, s[c])),
                    numCell('budget_used', u ? u.budget_used : null),
                    numCell('token_budget', u ? u.token_budget : null),
                    numCell('budget_remaining', u ? u.budget_remaining : null));
            });
        fillBody('usage-table', rows, 11);
    }

    /* --- backends: errors and latency per hour ---------------------------------- */

    function drawBackends({ errors, latency }) {
        const byKey = new Map();
        const key = (r) => JSON.stringify([userKey(r.backend), userKey(r.hour)]);
        for (const r of errors.rows || []) byKey.set(key(r), { backend: r.backend, hour: r.hour, e: r });
        for (const r of latency.rows || []) {
            const k = key(r);
            if (!byKey.has(k)) byKey.set(k, { backend: r.backend, hour: r.hour });
            byKey.get(k).l = r;
        }
        const rows = [...byKey.values()]
            .sort((a, b) => (userKey(b.hour).localeCompare(userKey(a.hour)) ||
                userKey(a.backend).localeCompare(userKey(b.backend))))
            .map(({ backend, hour, e, l }) => {
                const calls = e ? e.calls : null;
                return el('tr', { data: { backend: userKey(backend), hour: userKey(hour) } },
                    textCell('hour', hour, 'id'),
                    textCell('backend', backend),
                    numCell('calls', calls),
                    numCell('failures', e ? e.failures : null),
                    numCell('error_rate', e ? e.error_rate : null, pct),
                    numCell('answered', e ? e.answered : null),
                    numCell('failed_over', e ? e.failed_over : null),
                    numCell('p50_ms', l ? l.p50_ms : null),
                    numCell('p95_ms', l ? l.p95_ms : null),
                    numCell('p99_ms', l ? l.p99_ms : null),
                    numCell('max_ms', l ? l.max_ms : null));
            });
        fillBody('backends-table', rows, 11);
    }

    /* --- failovers, refusals ----------------------------------------------------- */

    function drawFailovers({ failovers }) {
        const rows = [...(failovers.rows || [])].reverse().map((r) =>
            el('tr', { data: { requestId: userKey(r.request_id) } },
                textCell('time', r.time, 'id'),
                textCell('request_id', r.request_id, 'id'),
                textCell('from_backend', r.from_backend),
                numCell('from_status', r.from_status, String),
                textCell('to_backend', r.to_backend),
                numCell('attempts', r.attempts),
                badgeCell('status', r.status)));
        fillBody('failovers-table', rows, 7);
        $('failovers-note').textContent = failovers.truncated
            ? `the newest ${failovers.rows.length} of ${failovers.total_rows}` : '';
    }

    function drawRefusals({ refusals }) {
        const rows = (refusals.rows || []).map((r) =>
            el('tr', { data: { reason: userKey(r.reason) } },
                textCell('reason', r.reason),
                numCell('refused', r.refused),
                textCell('last_seen', r.last_seen, 'id')));
        fillBody('refusals-table', rows, 3);
    }

    /* --- circuit breakers --------------------------------------------------------- */

    function drawBreakers({ breakers }) {
        const rows = (breakers.backends || []).map((b) => {
            const action = actionsCell(b.state === 'closed' ? null : button('Reset', 'small danger', () => act(
                () => api(`breakers/${encodeURIComponent(userKey(b.name))}/reset`, { method: 'POST' }),
                `Breaker of ${b.name} reset.`, 'status')));
            return el('tr', { data: { backend: userKey(b.name), state: userKey(b.state) } },
                textCell('name', b.name),
                badgeCell('state', b.state),
                action,
                numCell('priority', b.priority),
                numCell('failures', b.failures),
                textCell('open_until', b.open_until, 'id'),
                textCell('last_error', b.last_error, 'text'));
        });
        fillBody('breakers-table', rows, 7);
    }

    // Runs a change (a POST/PATCH/DELETE), says how it went, then reloads.
    async function act(call, done, where) {
        const show = (text, isError) => {
            if (where === 'users') {
                $('users-message').textContent = text;
                $('users-message').classList.toggle('is-error', Boolean(isError));
            } else {
                setStatus(text, isError);
            }
        };
        let result;
        try {
            result = await call();
        } catch (e) {
            if (isAuthError(e)) {
                signOut(authMessage(e));
                return null;
            }
            show(e.message, true);
            return null;
        }
        await reload();
        if (!credential) return null; // the reload found the credential no longer good
        show(typeof done === 'function' ? done(result) : done);
        return result;
    }

    /* --- audit ----------------------------------------------------------------- */

    function drawAudit({ audit }) {
        const rows = (audit.rows || []).map((r) =>
            el('tr', { data: { requestId: userKey(r.request_id), user: userKey(r.user_id) } },
                textCell('request_id', r.request_id, 'id'),
                textCell('time', r.time, 'id'),
                textCell('user_id', r.user_id, 'text id'),
                textCell('operation', r.operation),
                textCell('model', r.model),
                textCell('backend', r.backend),
                badgeCell('status', r.status),
                numCell('http_status', r.http_status, String),
                numCell('total_tokens', r.total_tokens),
                numCell('latency_ms', r.latency_ms),
                textCell('error_code', r.error_code)));
        fillBody('audit-table', rows, 11);
    }

    /* --- users and keys -------------------------------------------------------- */

    function drawUsers({ users }) {
        const rows = (users.users || []).map((u) => {
            const id = userKey(u.user_id);
            const custom = u.custom || {};
            const limit = (col) => {
                const td = numCell(col, u[col]);
                if (custom[col]) td.classList.add('custom');
                td.title = custom[col] ? "the user's own" : "the configuration's default";
                return td;
            };
            const actions = actionsCell(
                button(u.disabled ? 'Enable' : 'Disable', 'small secondary', () => act(
                    () => api('users', { method: 'PATCH', body: { user_id: u.user_id, disabled: !u.disabled } }),
                    `${id} ${u.disabled ? 'enabled' : 'disabled'}.`, 'users')),
                button('New key', 'small', () => act(
                    () => api('keys', { method: 'POST', body: { user_id: u.user_id } }),
                    (k) => { showNewKey(k); return `New key ${k.key_id} for ${id}.`; }, 'users')),
                button('Keys', 'small secondary', () => showKeys(u.user_id)));
            return el('tr', { data: { user: id, disabled: u.disabled ? '1' : '0' } },
                textCell('user_id', id, 'text id'),
                textCell('roles', u.roles),
                limit('requests_per_window'),
                limit('window_s'),
                limit('tokens_per_minute'),
                limit('token_budget'),
                textCell('budget_period', u.budget_period),
                numCell('budget_used', u.budget_used),
                numCell('budget_reserved', u.budget_reserved),
                numCell('budget_remaining', u.budget_remaining),
                badgeCell('state', u.disabled ? 'disabled' : 'enabled'),
                actions);
        });
        fillBody('users-table', rows, 12);
    }

    function showNewKey(k) {
        $('new-key-user').textContent = userKey(k.user_id);
        $('new-key-text').textContent = String(k.key || '');
        $('new-key').hidden = false;
    }

    function hideNewKey() {
        $('new-key-text').textContent = '';
        $('new-key-user').textContent = '';
        $('new-key').hidden = true;
    }

    async function showKeys(userId) {
        let data;
        try {
            data = await api('keys?' + new URLSearchParams({ user: userKey(userId) }));
        } catch (e) {
            if (isAuthError(e)) signOut(authMessage(e));
            else setStatus('Could not list keys: ' + e.message, true);
            return;
        }
        $('keys-user').textContent = userKey(userId);
        const rows = (data.keys || []).map((k) => {
            const action = actionsCell(k.revoked ? null : button('Revoke', 'small danger', async () => {
                if (!window.confirm(`Revoke key ${k.key_id} of ${userKey(userId)}?`)) return;
                await act(() => api(`keys/${encodeURIComponent(userKey(k.key_id))}`, { method: 'DELETE' }),
                    `Key ${k.key_id} revoked.`, 'users');
                showKeys(userId);
            }));
            return el('tr', { data: { keyId: userKey(k.key_id) } },
                textCell('key_id', k.key_id, 'id'),
                textCell('created', k.created, 'id'),
                textCell('expires', k.expires, 'id'),
                textCell('revoked', k.revoked, 'id'),
                action);
        });
        fillBody('keys-table', rows, 5);
        $('keys').hidden = false;
    }

    function createUser() {
        const body = { user_id: $('new-user-id').value.trim() };
        const roles = $('new-user-roles').value.trim();
        const budget = $('new-user-budget').value.trim();
        if (roles) body.roles = roles;
        if (budget !== '') body.token_budget = Number(budget);
        if (!body.user_id) return;
        act(() => api('users', { method: 'POST', body }), (u) => {
            $('new-user-id').value = '';
            $('new-user-roles').value = '';
            $('new-user-budget').value = '';
            return `User ${userKey(u.user_id)} created.`;
        }, 'users');
    }

    /* --- wiring ------------------------------------------------------------------ */

    function start() {
        $('signin-form').addEventListener('submit', (ev) => {
            ev.preventDefault();
            const cred = $('credential').value.trim();
            if (cred) signIn(cred);
        });
        $('signout').addEventListener('click', () => signOut(''));
        $('refresh').addEventListener('click', () => reload());
        $('period').addEventListener('change', () => reload());
        $('audit-filter').addEventListener('submit', (ev) => {
            ev.preventDefault();
            reload(['panel-audit']);
        });
        $('audit-clear').addEventListener('click', () => {
            $('audit-user').value = '';
            $('audit-request-id').value = '';
            reload(['panel-audit']);
        });
        $('new-user-form').addEventListener('submit', (ev) => {
            ev.preventDefault();
            createUser();
        });
        $('new-key-dismiss').addEventListener('click', hideNewKey);

        const saved = sessionStorage.getItem(CREDENTIAL_KEY);
        if (saved) signIn(saved);
        else showSignin('');
    }

    if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
    else start();
})();
