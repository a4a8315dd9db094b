// The dashboard: redraws from /dashboard/data every few seconds, sends emails from the form and follows
// each one to SENT or FAILED. Plain DOM: values are set as text, never parsed as HTML.
"use strict";

(function () {
  const REFRESH_MS = 5000;
  const FOLLOW_MS = 1000;
  const FINAL = ["SENT", "FAILED"];
  const urls = {
    data: document.body.dataset.dataUrl,
    create: document.body.dataset.createUrl,
    apiKeys: document.body.dataset.apiKeysUrl,
    adminEmail: document.body.dataset.adminEmailUrl,
  };
  let chart = null;

  function el(tag, text, attrs) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
    return node;
  }

  function row(cells) {
    const tr = document.createElement("tr");
    for (const cell of cells) {
      const td = document.createElement("td");
      if (cell instanceof Node) td.appendChild(cell);
      else td.textContent = cell === null || cell === undefined || cell === "" ? "–" : String(cell);
      tr.appendChild(td);
    }
    return tr;
  }

  function when(iso) {
    return iso ? iso.replace("T", " ").slice(0, 19) : "";
  }

  function seconds(value) {
    if (value < 120) return Math.round(value) + " s";
    if (value < 7200) return Math.round(value / 60) + " min";
    return Math.round(value / 3600) + " h";
  }

  function renderCounts(data) {
    for (const node of document.querySelectorAll("[data-count]")) {
      const status = node.dataset.count;
      const prefix = data.estimated.includes(status) ? "≈" : "";
      node.textContent = prefix + data.counts[status].toLocaleString("en");
    }
    document.getElementById("queue-depth").textContent = data.queue_depth === null ? "?" : data.queue_depth;
    document.getElementById("oldest-pending").textContent = seconds(data.oldest_pending_age_seconds);
  }

  function renderChart(data) {
    const labels = data.chart.minutes.map((iso) => iso.slice(11, 16));
    const series = [
      ["accepted", "#4a7bd0"],
      ["sent", "#2f9e44"],
      ["failed", "#d9480f"],
    ];
    if (chart === null) {
      chart = new Chart(document.getElementById("chart"), {
        type: "line",
        data: {
          labels: labels,
          datasets: series.map(([name, color]) => ({
            label: name, data: data.chart[name], borderColor: color, backgroundColor: color,
            pointRadius: 0, borderWidth: 2, tension: 0.2,
          })),
        },
        options: {
          animation: false, responsive: true, maintainAspectRatio: false,
          interaction: { mode: "index", intersect: false },
          scales: { y: { beginAtZero: true, ticks: { precision: 0 } } },
        },
      });
      return;
    }
    chart.data.labels = labels;
    series.forEach(([name], i) => { chart.data.datasets[i].data = data.chart[name]; });
    chart.update("none");
  }

  function renderProviders(data) {
    const body = document.querySelector("#providers tbody");
    body.replaceChildren(...data.providers.map((p) => {
      const badge = el("span", p.circuit.state, { class: "badge circuit-" + p.circuit.state });
      const limit = p.rate_limit ? p.rate_limit + "/s, burst " + p.burst : "none";
      const error = p.last_error ? p.last_error.detail + "  (" + when(p.last_error.at) + ")" : "";
      return row([p.name, p.backend, p.priority, badge, limit, p.rate_per_second, error]);
    }));
  }

  function renderFailures(data) {
    const body = document.querySelector("#failures tbody");
    if (data.failures.length === 0) {
      const empty = row(["No failures."]);
      empty.firstChild.colSpan = 5;
      body.replaceChildren(empty);
      return;
    }
    body.replaceChildren(...data.failures.map((f) => row([when(f.at), el("a", f.id, { href: f.admin_url }), f.provider, f.attempts, f.last_error])));
  }

  function renderWebhooks(data) {
    const body = document.querySelector("#webhooks tbody");
    if (data.webhooks.length === 0) {
      const empty = row(["No webhooks."]);
      empty.firstChild.colSpan = 5;
      body.replaceChildren(empty);
      return;
    }
    body.replaceChildren(...data.webhooks.map((w) => {
      const last = w.last_delivery;
      const delivery = last ? when(last.at) + ": " + (last.status_code === null ? last.error : last.status_code) : "";
      const active = w.active ? "yes" : "no: " + w.disabled_reason;
      return row([el("a", w.target, { href: w.admin_url }), w.api_key, active, delivery, w.failures_last_day]);
    }));
  }

  function render(data) {
    renderCounts(data);
    renderChart(data);
    renderProviders(data);
    renderFailures(data);
    renderWebhooks(data);
    const stamp = document.getElementById("refreshed");
    stamp.textContent = "updated " + data.now.slice(11, 19) + " UTC";
    stamp.dataset.state = "ok";
  }

  async function refresh() {
    const stamp = document.getElementById("refreshed");
    try {
      const response = await fetch(urls.data, { headers: { Accept: "application/json" }, credentials: "same-origin" });
      if (response.status === 403) {
        stamp.textContent = "logged out: reload to log in";
        stamp.dataset.state = "error";
        return; // no point asking again
      }
      if (!response.ok) throw new Error("HTTP " + response.status);
      render(await response.json());
    } catch (error) {
      stamp.textContent = "refresh failed (" + error.message + "), retrying";
      stamp.dataset.state = "error";
    }
    // A tab in the background asks nothing: it refreshes as soon as it is shown again.
    if (document.hidden) document.addEventListener("visibilitychange", refresh, { once: true });
    else setTimeout(refresh, REFRESH_MS);
  }

  // --- the send form and the cards that follow each email ------------------------------------------

  function payload(form) {
    const value = (name) => form.elements[name].value.trim();
    const body = { from: value("from"), to: value("to").split(",").map((a) => a.trim()).filter(Boolean) };
    if (value("api_key")) body.api_key = Number(value("api_key")); // absent: the server names the field
    for (const name of ["subject", "text", "template"]) {
      if (value(name)) body[name] = value(name);
    }
    if (value("context")) {
      try {
        body.context = JSON.parse(value("context"));
      } catch (error) {
        throw { context: ["Not valid JSON: " + error.message] };
      }
    }
    return body;
  }

  function showErrors(errors) {
    const box = document.getElementById("send-errors");
    box.replaceChildren(...Object.entries(errors).map(([field, messages]) =>
      el("span", field + ": " + (Array.isArray(messages) ? messages.join(" ") : JSON.stringify(messages)))));
  }

  function follow(email) {
    const card = document.getElementById("followed-card").content.firstElementChild.cloneNode(true);
    const link = card.querySelector(".email-id");
    link.textContent = email.id;
    link.href = urls.adminEmail + email.id + "/change/";
    card.dataset.emailId = email.id;
    document.getElementById("followed").prepend(card);
    update(card, email);
    poll(card, email.id);
  }

  function update(card, email) {
    const order = ["PENDING", "PROCESSING", email.status === "FAILED" ? "FAILED" : "SENT"];
    const reached = order.indexOf(email.status);
    for (const step of card.querySelectorAll("[data-step]")) {
      const index = order.indexOf(step.dataset.step);
      step.hidden = index === -1;
      step.classList.toggle("done", index !== -1 && index <= reached);
      step.classList.toggle("current", index === reached);
    }
    const status = card.querySelector(".status");
    status.textContent = email.status;
    status.dataset.status = email.status;
    const detail = [];
    if (email.attempts) detail.push(email.attempts + " attempt(s)");
    if (email.provider) detail.push("via " + email.provider);
    if (email.last_error) detail.push(email.last_error);
    card.querySelector(".detail").textContent = detail.join(", ");
  }

  async function poll(card, id, wait = FOLLOW_MS) {
    try {
      const response = await fetch(urls.create + "/" + id, { credentials: "same-origin" });
      if (response.ok) {
        const email = await response.json();
        update(card, email);
        if (FINAL.includes(email.status)) return;
        wait = FOLLOW_MS;
      } else if (response.status === 403 || response.status === 404) {
        card.querySelector(".detail").textContent = "no longer visible (HTTP " + response.status + ")";
        return; // logged out, or gone: asking again will not help
      } else {
        wait = Math.min(wait * 2, 30000); // the server is struggling: ask less often
      }
    } catch (error) {
      wait = Math.min(wait * 2, 30000); // a network blip: ask again, less often
    }
    setTimeout(() => poll(card, id, wait), wait);
  }

  function keyLabel(key) {
    const senders = key.senders.length ? key.senders.join(", ") : "any sender";
    const label = key.name + " (" + key.prefix + "…" + (key.test ? ", test: nothing is sent" : "") + "): " + senders;
    return label.length > 100 ? label.slice(0, 99) + "…" : label;
  }

  // The keys an operator may send as: the form sends as one of them, under its senders and rate.
  async function loadApiKeys(form) {
    try {
      const response = await fetch(urls.apiKeys, { headers: { Accept: "application/json" }, credentials: "same-origin" });
      if (!response.ok) throw new Error("HTTP " + response.status);
      const keys = (await response.json()).results;
      form.elements.api_key.append(...keys.map((key) => el("option", keyLabel(key), { value: key.id })));
    } catch (error) {
      showErrors({ api_key: ["The keys could not be loaded (" + error.message + "): reload the page."] });
    }
  }

  async function submit(event) {
    event.preventDefault();
    const form = event.target;
    showErrors({});
    let body;
    try {
      body = payload(form);
    } catch (errors) {
      showErrors(errors);
      return;
    }
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const response = await fetch(urls.create, {
        method: "POST",
        credentials: "same-origin",
        headers: {
          "Content-Type": "application/json",
          Accept: "application/json",
          "X-CSRFToken": form.elements.csrfmiddlewaretoken.value,
        },
        body: JSON.stringify(body),
      });
      const answer = await response.json().catch(() => ({ detail: "HTTP " + response.status }));
      if (response.status === 202) follow(answer);
      else showErrors(answer);
    } catch (error) {
      showErrors({ network: [error.message] });
    } finally {
      button.disabled = false;
    }
  }

  const form = document.getElementById("send-form"); // absent for staff who may not send
  if (form) {
    form.addEventListener("submit", submit);
    loadApiKeys(form);
  }
  render(JSON.parse(document.getElementById("snapshot").textContent));
  setTimeout(refresh, REFRESH_MS);
})();
