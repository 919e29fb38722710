// The explain page's script: posts the form to POST /explain with the operator token and
// renders the answer as a tree. Every value shown is set as text (textContent), never as
// markup: claims and found values come from the request being explained.
"use strict";

(function () {
  const byId = (id) => document.getElementById(id);
  let answers = 0;

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  // A JSON value as `portcullis explain` prints it: strings quoted, absent as null.
  function shown(value) {
    return JSON.stringify(value === undefined ? null : value);
  }

  // `name: value` lines into an object; a repeated name joins its values with ", ".
  // A bad line is named by number only: its text may be a credential.
  function parseHeaders(text) {
    const headers = new Map();
    const lines = text.split(/\r?\n/);
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i].trim();
      if (line === "") continue;
      const colon = line.indexOf(":");
      if (colon <= 0) {
        throw new Error("Header line " + (i + 1) + " is not `name: value`.");
      }
      const name = line.slice(0, colon).trim().toLowerCase();
      const value = line.slice(colon + 1).trim();
      headers.set(name, headers.has(name) ? headers.get(name) + ", " + value : value);
    }
    return Object.fromEntries(headers);
  }

  function showError(message) {
    const error = byId("error");
    error.textContent = message;
    error.hidden = false;
  }

  function hideError() {
    const error = byId("error");
    error.textContent = "";
    error.hidden = true;
  }

  function busy(on) {
    byId("submit").disabled = on;
    byId("status").textContent = on ? "Explaining\u2026" : "";
  }

  function sublist(li) {
    const ul = el("ul");
    li.append(ul);
    return ul;
  }

  function tokenItem(t) {
    const result = t.result || "none";
    const li = el("li", "step token " + (result === "valid" ? "allow" : result === "refused" ? "deny" : "none"));
    li.append(el("span", "label", "Token"), " ");
    if (result === "valid") {
      li.append(
        el("span", "verdict", "valid"),
        " " + (t.kind || "token") + " by ",
        el("span", "name", "TokenIntrospector/" + (t.introspector || "?"))
      );
      if (t.claims) {
        const details = el("details", "claims");
        details.open = true;
        details.append(el("summary", null, "validated claims"), el("pre", null, JSON.stringify(t.claims, null, 2)));
        const item = el("li", "claims");
        item.append(details);
        sublist(li).append(item);
      }
    } else if (result === "refused") {
      li.append(el("span", "verdict", "refused"), ": ", el("span", "reason", t.reason || ""));
    } else {
      li.append(el("span", "verdict", "none"), " (anonymous request)");
    }
    return li;
  }

  function userItem(u) {
    const found = /^(found|created)/.test(u.result);
    const li = el("li", "step user " + (found ? "allow" : "none"));
    li.append(el("span", "label", "User"), " ", el("span", "verdict", u.result));
    if (u.user) li.append(" ", el("span", "name", "User/" + u.user));
    if (u.detail) li.append(": ", el("span", "detail", u.detail));
    return li;
  }

  function mismatchItem(m, kind) {
    const li = el("li", kind);
    if (kind === "note") li.append(el("span", "label", "note"), " ");
    const path = el("span", "path", m.path === "" ? "(the request)" : m.path);
    path.dataset.path = m.path;
    li.append(
      path,
      ": expected ",
      el("code", "expected", shown(m.expected)),
      ", found ",
      el("code", "found", shown(m.but))
    );
    if (m.note) li.append(" ", el("span", "why", "(" + m.note + ")"));
    else if (kind === "note") li.append(" ", el("span", "why", "(matched, perhaps not as meant)"));
    return li;
  }

  // `dryRun`: a dry-run policy's `{would_allow}`; it denies, and says what it would do.
  function explanationItem(name, e, kind, dryRun) {
    const allows = e.allowed && !dryRun;
    const li = el("li", kind + " " + (allows ? "allow" : "deny"));
    li.dataset.name = name;
    li.append(
      el("span", "name", name),
      ": ",
      el("span", "verdict", allows ? "allows" : "denies"),
      " ",
      el("span", "engine", "(" + e.engine + ")")
    );
    if (dryRun) {
      li.dataset.dryRun = dryRun.would_allow ? "would-allow" : "would-deny";
      li.append(" ", el("span", "why", "(dry-run: would " + (dryRun.would_allow ? "allow" : "deny") + ")"));
    }
    const items = [];
    for (const m of e.errors || []) items.push(mismatchItem(m, "mismatch"));
    for (const m of e.notes || []) items.push(mismatchItem(m, "note"));
    (e.children || []).forEach((child, i) => items.push(explanationItem("[" + i + "]", child, "part")));
    if (items.length) sublist(li).append(...items);
    return li;
  }

  function policiesItem(policies) {
    const li = el("li", "step policies");
    li.append(el("span", "label", "Policies"), " (in evaluation order; the first that allows wins)");
    const ul = sublist(li);
    if (policies.length === 0) ul.append(el("li", "none", "no AccessPolicy was evaluated"));
    for (const p of policies) ul.append(explanationItem("AccessPolicy/" + p.policy, p.explanation, "policy", p.dry_run));
    return li;
  }

  function decisionParts(d) {
    const parts = [
      el("span", "verdict", d.allowed ? "ALLOW" : "DENY"),
      " ",
      el("span", "status", d.status),
      " ",
      el("span", "reason", "(" + d.reason + ")"),
    ];
    if (d.policy) parts.push(" by ", el("span", "name", "AccessPolicy/" + d.policy));
    if (d.message) parts.push(": ", el("span", "message", d.message));
    return parts;
  }

  function render(answer) {
    const d = answer.decision;
    const decision = byId("decision");
    decision.className = d.allowed ? "allow" : "deny";
    decision.dataset.allowed = String(d.allowed);
    decision.dataset.status = String(d.status);
    decision.dataset.reason = d.reason;
    decision.replaceChildren(...decisionParts(d));

    const trace = answer.trace || {};
    const tree = byId("trace");
    tree.replaceChildren();
    tree.append(tokenItem(trace.token || {}));
    if (trace.user) tree.append(userItem(trace.user));
    tree.append(policiesItem(trace.policies || []));
    const last = el("li", "step decision " + (d.allowed ? "allow" : "deny"));
    last.append(el("span", "label", "Decision"), " ", ...decisionParts(d));
    tree.append(last);

    byId("tree-text").textContent = answer.tree || "";
    byId("trace-json").textContent = JSON.stringify(trace, null, 2);
    answers += 1;
    const result = byId("result");
    result.dataset.answers = String(answers);
    result.hidden = false;
  }

  async function submit(event) {
    event.preventDefault();
    hideError();
    let headers;
    try {
      headers = parseHeaders(byId("headers").value);
    } catch (e) {
      showError(e.message);
      return;
    }
    const operator = byId("operator-token").value.trim();
    if (operator === "") {
      showError("The operator token is required: the content of --admin-token-file.");
      byId("operator-token").focus();
      return;
    }
    const body = {
      token: byId("token").value.trim(),
      method: byId("method").value.trim().toUpperCase() || "GET",
      path: byId("path").value.trim() || "/",
      headers: headers,
      namespace: byId("namespace").value.trim(),
    };
    busy(true);
    try {
      const response = await fetch("explain", {
        method: "POST",
        headers: { "Content-Type": "application/json", Authorization: "Bearer " + operator },
        body: JSON.stringify(body),
        cache: "no-store",
        credentials: "omit",
        redirect: "error",
        referrerPolicy: "no-referrer",
      });
      let answer = null;
      try {
        answer = await response.json();
      } catch (_) {
        answer = null;
      }
      if (!response.ok || !answer || !answer.decision) {
        const what =
          response.status === 401 || response.status === 403
            ? "The operator token was refused"
            : "The admin listener could not explain this request";
        const why = answer && answer.message ? ": " + answer.message : "";
        byId("result").hidden = true;
        showError(what + " (HTTP " + response.status + why + ").");
        return;
      }
      render(answer);
    } catch (e) {
      showError("The admin listener did not answer (" + e.message + ").");
    } finally {
      busy(false);
    }
  }

  byId("explain-form").addEventListener("submit", submit);
  document.documentElement.dataset.ready = "true";
})();
