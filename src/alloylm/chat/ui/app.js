// The side-by-side page of `alloy serve MODEL... --ui` (served by the server itself; no CDN).
// Every column is one served model with its own history; answers stream from the server's
// OpenAI-compatible POST /v1/chat/completions. Votes go to POST /ui/votes.
"use strict";

(() => {
  const KEY_STORAGE = "alloylm-api-key";
  const SLOTS = "ABCD";
  const $ = (id) => document.getElementById(id);
  const state = {
    config: null,
    columns: [], // {model, slot, history: [{role, content}], body, title}
    session: "",
    turn: 0,
    busy: false,
    revealed: false,
  };

  // ---------------------------------------------------------------- the key
  function keyFromFragment() {
    // /ui/#key=KEY: a fragment never reaches a server; it is removed from the address at once.
    const match = location.hash.match(/(?:^#|&)key=([^&]*)/);
    if (match) {
      sessionStorage.setItem(KEY_STORAGE, decodeURIComponent(match[1]));
      history.replaceState(null, "", location.pathname + location.search);
    }
  }

  function headers(json) {
    const result = {};
    if (json) result["Content-Type"] = "application/json";
    const key = sessionStorage.getItem(KEY_STORAGE);
    if (key) result.Authorization = "Bearer " + key;
    return result;
  }

  async function loadConfig() {
    const response = await fetch("/ui/config", { headers: headers(false) });
    const config = await response.json();
    if (!config.authorized) {
      const hadKey = sessionStorage.getItem(KEY_STORAGE);
      sessionStorage.removeItem(KEY_STORAGE);
      $("key-panel").hidden = false;
      $("chat").hidden = true;
      $("key-error").textContent = hadKey ? "That key was refused." : "";
      $("key").focus();
      return;
    }
    $("key-panel").hidden = true;
    state.config = config;
    setUpSettings();
    newConversation();
    $("chat").hidden = false;
    $("message").focus();
  }

  // ---------------------------------------------------------------- settings
  function setUpSettings() {
    const select = $("preset");
    select.textContent = "";
    for (const name of Object.keys(state.config.presets)) {
      const option = document.createElement("option");
      option.value = option.textContent = name;
      select.appendChild(option);
    }
    select.value = state.config.default_preset;
    applyPreset();
    select.addEventListener("change", applyPreset);
  }

  function applyPreset() {
    const preset = state.config.presets[$("preset").value];
    for (const name of ["temperature", "top_p", "top_k", "repetition_penalty", "max_tokens"]) {
      $(name).value = preset[name];
    }
  }

  function sampling() {
    const params = {};
    const numbers = { temperature: parseFloat, top_p: parseFloat, repetition_penalty: parseFloat,
      top_k: (v) => parseInt(v, 10), max_tokens: (v) => parseInt(v, 10) };
    for (const [name, parse] of Object.entries(numbers)) {
      const value = parse($(name).value);
      if (!Number.isNaN(value)) params[name] = value;
    }
    const seed = parseInt($("seed").value, 10);
    if (!Number.isNaN(seed)) params.seed = seed + state.turn; // turn i uses seed + i, as alloy chat
    return params;
  }

  // ---------------------------------------------------------------- columns
  function shuffled(items) {
    const result = items.slice();
    const random = new Uint32Array(result.length);
    crypto.getRandomValues(random);
    for (let i = result.length - 1; i > 0; i--) {
      const j = random[i] % (i + 1);
      [result[i], result[j]] = [result[j], result[i]];
    }
    return result;
  }

  function newConversation() {
    const models = state.config.blind ? shuffled(state.config.models) : state.config.models;
    state.session = Array.from(crypto.getRandomValues(new Uint8Array(8)),
      (b) => b.toString(16).padStart(2, "0")).join("");
    state.turn = 0;
    state.revealed = false;
    const main = $("columns");
    main.textContent = "";
    main.className = "cols-" + models.length;
    state.columns = models.map((model, index) => {
      const column = document.createElement("section");
      column.className = "column";
      column.dataset.slot = SLOTS[index];
      const title = document.createElement("h2");
      const body = document.createElement("div");
      body.className = "messages";
      column.append(title, body);
      main.appendChild(column);
      return { model, slot: SLOTS[index], history: [], body, title };
    });
    $("mode").textContent = "names shown";
    showTitles();
    hideVote();
    $("status").textContent = `Votes are saved by the server to ${state.config.votes_file}.`;
  }

  function showTitles() {
    const hidden = state.config.blind && !state.revealed;
    if (state.config.blind) {
      $("mode").textContent = hidden ? "blind: names hidden until you vote"
        : "blind: names revealed (New conversation hides them again)";
    }
    for (const column of state.columns) {
      column.title.textContent = hidden ? `Model ${column.slot}` : `${column.slot}: ${column.model}`;
    }
  }

  function bubble(column, role, text) {
    const element = document.createElement("div");
    element.className = "message " + role;
    element.textContent = text;
    column.body.appendChild(element);
    return element;
  }

  // ---------------------------------------------------------------- one turn
  async function streamAnswer(column, messages, params, element) {
    const response = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: headers(true),
      body: JSON.stringify({ model: column.model, messages, stream: true,
        stream_options: { include_usage: true }, ...params }),
    });
    if (!response.ok) {
      const failure = await response.json().catch(() => ({}));
      throw new Error((failure.error && failure.error.message) || `HTTP ${response.status}`);
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    const result = { text: "", finish: null, tokens: null };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return result;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data: ")) continue;
          const data = line.slice(6);
          if (data === "[DONE]") return result;
          const chunk = JSON.parse(data);
          if (chunk.error) throw new Error(chunk.error.message);
          if (chunk.usage) result.tokens = chunk.usage.completion_tokens;
          for (const choice of chunk.choices || []) {
            if (choice.delta && choice.delta.content) {
              result.text += choice.delta.content;
              element.textContent = result.text;
              element.scrollIntoView({ block: "nearest" });
            }
            if (choice.finish_reason) result.finish = choice.finish_reason;
          }
        }
      }
    }
  }

  async function send(event) {
    if (event) event.preventDefault();
    const text = $("message").value.trim();
    if (!text || state.busy) return;
    state.busy = true;
    $("send").disabled = true;
    $("message").value = "";
    hideVote();
    const system = $("system").value.trim();
    const params = sampling();
    const answers = await Promise.all(state.columns.map(async (column) => {
      bubble(column, "user", text);
      const element = bubble(column, "assistant streaming", "");
      const messages = [...(system ? [{ role: "system", content: system }] : []),
        ...column.history, { role: "user", content: text }];
      try {
        const result = await streamAnswer(column, messages, params, element);
        element.classList.remove("streaming");
        if (!result.text) element.textContent = "(empty reply)";
        const stats = document.createElement("div");
        stats.className = "stats";
        stats.textContent = `${result.tokens ?? "?"} tokens, finish: ${result.finish}`;
        column.body.appendChild(stats);
        column.history.push({ role: "user", content: text }, { role: "assistant", content: result.text });
        return result.text;
      } catch (error) {
        element.classList.remove("streaming");
        element.classList.add("failed");
        element.textContent = "Error: " + error.message;
        return null;
      }
    }));
    state.busy = false;
    $("send").disabled = false;
    const turn = state.turn;
    state.turn += 1;
    if (answers.every((answer) => answer !== null)) {
      offerVote({ prompt: text, answers, turn, system: system || null, settings: params });
    }
    $("message").focus();
  }

  // ---------------------------------------------------------------- votes
  function hideVote() {
    $("vote").hidden = true;
    $("vote-buttons").textContent = "";
    $("vote-status").textContent = "";
  }

  function offerVote(turn) {
    const buttons = $("vote-buttons");
    buttons.textContent = "";
    const two = state.columns.length === 2;
    $("vote-question").textContent = two ? "Which answer is better?" : "Which answer is best?";
    const choices = state.columns.map((c) => [c.slot, `${c.slot} is ${two ? "better" : "best"}`]);
    choices.push(["tie", "Tie"], ["both_bad", two ? "Both bad" : "All bad"]);
    for (const [winner, label] of choices) {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = label;
      button.dataset.winner = winner;
      button.addEventListener("click", () => vote(winner, turn));
      buttons.appendChild(button);
    }
    $("vote").hidden = false;
  }

  async function vote(winner, turn) {
    for (const button of $("vote-buttons").querySelectorAll("button")) button.disabled = true;
    const body = { models: state.columns.map((c) => c.model), winner, session: state.session,
      blind: state.config.blind && !state.revealed, ...turn };
    const response = await fetch("/ui/votes", {
      method: "POST", headers: headers(true), body: JSON.stringify(body),
    });
    const reply = await response.json();
    if (!response.ok) {
      $("vote-status").textContent = "Not saved: " + reply.error.message;
      for (const button of $("vote-buttons").querySelectorAll("button")) button.disabled = false;
      return;
    }
    state.revealed = true;
    showTitles();
    const names = state.columns.map((c) => `${c.slot} = ${c.model}`).join(", ");
    $("vote-status").textContent = `Vote saved (${reply.saved} record${reply.saved === 1 ? "" : "s"}). ${names}`;
  }

  // ---------------------------------------------------------------- wiring
  document.addEventListener("DOMContentLoaded", () => {
    keyFromFragment();
    $("ask").addEventListener("submit", send);
    $("message").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey) send(event);
    });
    $("new").addEventListener("click", () => { if (!state.busy && state.config) newConversation(); });
    $("key-ok").addEventListener("click", () => {
      sessionStorage.setItem(KEY_STORAGE, $("key").value);
      $("key").value = "";
      loadConfig();
    });
    $("key").addEventListener("keydown", (event) => {
      if (event.key === "Enter") $("key-ok").click();
    });
    loadConfig();
  });
})();
