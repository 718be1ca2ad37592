// The live page: calls in progress from the console's server-sent events. Everything from a call
// (caller ID, words, replies) is put in the page as text nodes, never as HTML.
"use strict";
(function () {
  const root = document.getElementById("live-calls");
  const state = document.getElementById("live-state");
  const callLink = root.dataset.call;
  let calls = {};

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function apply(event) {
    const id = event.call;
    let call = calls[id];
    if (!call) {
      if (event.type === "call.ended") return;
      call = calls[id] = {call: id, from: {}, started: event.at, turns: {}, lines: {}, ended: null, state: null,
                          transcript: false};
    }
    if (event.type === "call.started" && event.from) { call.from = event.from; call.transcript = !!event.transcript; }
    else if (event.type === "transcript.words") {
      if (!Number.isInteger(event.line) || (event.speaker !== "caller" && event.speaker !== "callee")) return;
      const line = call.lines[event.line] = call.lines[event.line] || {speaker: event.speaker, text: "", final: false};
      if (!line.final) { line.text = event.text || ""; line.final = !!event.final; }
    }
    else if (event.type === "call.ended") { call.ended = event.at; call.state = event.state || ""; }
    else if (event.type === "caller.words" || event.type === "reply.words" || event.type === "turn.completed") {
      const number = event.type === "turn.completed" ? (event.turn || {}).turn_number : event.turn;
      if (!Number.isInteger(number)) return;
      const turn = call.turns[number] = call.turns[number] || {caller: "", final: false, reply: "", status: null};
      if (event.type === "caller.words" && !turn.final) { turn.caller = event.text || ""; turn.final = !!event.final; }
      else if (event.type === "reply.words") turn.reply = event.text || "";
      else if (event.type === "turn.completed") {
        turn.caller = event.turn.transcript || turn.caller; turn.final = true;
        turn.reply = event.turn.reply || turn.reply; turn.status = event.turn.status;
      }
    }
  }

  function render() {
    root.replaceChildren();
    const ids = Object.keys(calls).sort((a, b) => calls[b].started - calls[a].started);
    if (!ids.length) root.append(el("p", "muted", "No calls in progress."));
    for (const id of ids) {
      const call = calls[id];
      const card = el("article", "live-call" + (call.ended ? " ended" : ""));
      card.dataset.call = id;
      const heading = el("h2");
      const link = el("a", "caller", ((call.from.caller_name || "") + " " + (call.from.caller_number || "")).trim() || id);
      link.href = callLink.replace("UNIQUEID", encodeURIComponent(id));
      heading.append(link, el("span", "muted", " → " + (call.from.connected || call.from.extension || "")));
      if (call.transcript) heading.append(el("span", "tag", "transcript"));
      heading.append(el("span", "tag", call.ended ? "ended" + (call.state ? ": " + call.state : "") : "in progress"));
      card.append(heading);
      const numbers = Object.keys(call.turns).map(Number).sort((a, b) => a - b);
      for (const number of numbers) {
        const turn = call.turns[number];
        const block = el("div", "live-turn");
        block.dataset.turn = number;
        const said = el("p", "question" + (turn.final ? " final" : " interim"));
        said.append(el("b", null, "Caller "), el("span", "words", turn.caller || "…"));
        block.append(said);
        if (turn.reply) {
          const reply = el("p", "reply");
          reply.append(el("b", null, "Assistant "), el("span", "reply-words", turn.reply));
          block.append(reply);
        }
        if (turn.status) block.append(el("span", "status status-" + turn.status, turn.status));
        card.append(block);
      }
      const lines = Object.keys(call.lines || {}).map(Number).sort((a, b) => a - b);
      for (const number of lines) {
        const line = call.lines[number];
        const said = el("p", "line " + line.speaker + (line.final ? " final" : " interim"));
        said.dataset.line = number;
        said.dataset.speaker = line.speaker;
        said.append(el("b", null, (line.speaker === "caller" ? "Caller" : "Callee") + " "), el("span", "words", line.text || "…"));
        card.append(said);
      }
      root.append(card);
    }
  }

  const source = new EventSource(root.dataset.events);
  source.addEventListener("open", () => { state.textContent = "connected: calls appear as they happen"; });
  source.addEventListener("error", () => { state.textContent = "connection lost, reconnecting…"; });
  source.addEventListener("snapshot", (message) => {
    calls = {};
    for (const call of JSON.parse(message.data)) calls[call.call] = call;
    render();
  });
  source.addEventListener("call", (message) => { apply(JSON.parse(message.data)); render(); });
})();
