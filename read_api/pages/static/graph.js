// The identity graph as inline SVG, no library. Layout is a circle in a deterministic order
// (identifier priority, then first_seen, then hash), so the same graph always looks the same.
// Input: the /api/v1/cdp/profiles/{id}/graph body; edges and merge triggers are "type:hash".

const SVG_NS = "http://www.w3.org/2000/svg";
const TYPE_ORDER = ["external_id", "email", "phone", "device_id", "anonymous_id"];
const NODE_R = 22;
const MIN_RADIUS = 140;
const NODE_SPACING = 90; // arc length between neighbours on the circle
const MAX_LABELLED_NODES = 80;
const LARGE_GRAPH_PX = 900;

export function nodeRef(node) {
  return `${node.type}:${node.hash}`;
}

function typeRank(type) {
  const i = TYPE_ORDER.indexOf(type);
  return i === -1 ? TYPE_ORDER.length : i;
}

// {width, height, nodes: [{node, ref, x, y}]}: positions on one circle, first node at the top.
export function layoutGraph(graph) {
  const nodes = [...graph.nodes].sort((a, b) =>
    typeRank(a.type) - typeRank(b.type) || a.first_seen.localeCompare(b.first_seen) || a.hash.localeCompare(b.hash));
  const n = nodes.length;
  const radius = n <= 1 ? 0 : Math.max(MIN_RADIUS, (n * NODE_SPACING) / (2 * Math.PI));
  const margin = NODE_R + 90; // room for labels
  const size = 2 * (radius + margin);
  const placed = nodes.map((node, i) => {
    const angle = -Math.PI / 2 + (2 * Math.PI * i) / Math.max(n, 1);
    return { node, ref: nodeRef(node), x: size / 2 + radius * Math.cos(angle), y: size / 2 + radius * Math.sin(angle) };
  });
  return { width: size, height: size, nodes: placed };
}

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

const hashPrefix = (s, n) => String(s).slice(0, n);
// UUIDv7 event ids start with a timestamp shared by a whole minute of events: show the random tail.
const idTail = (s) => `…${String(s).slice(-8)}`;

// An <svg class="identity-graph"> with one <g class="graph-node"> per identifier and one
// <g class="graph-edge"> per link whose two ends are identifiers of the profile.
export function renderGraph(graph) {
  const layout = layoutGraph(graph);
  const at = new Map(layout.nodes.map((p) => [p.ref, p]));
  const triggers = new Set(graph.merges.map((m) => m.trigger));
  const root = svg("svg", {
    // Small graphs scale to the column; large ones keep their size and scroll in #graph.
    class: layout.width > LARGE_GRAPH_PX ? "identity-graph large" : "identity-graph",
    width: layout.width.toFixed(0), height: layout.height.toFixed(0),
    viewBox: `0 0 ${layout.width.toFixed(0)} ${layout.height.toFixed(0)}`,
    role: "img", "aria-label": `identity graph: ${graph.nodes.length} identifiers, ${graph.edges.length} links, ${graph.merges.length} merges`,
  });
  root.append(svg("defs", {}, svg("marker", {
    id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse",
  }, svg("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrow" }))));

  const edges = svg("g", { class: "edges" });
  const seenPairs = new Map();
  for (const edge of graph.edges) {
    const a = at.get(edge.from);
    const b = at.get(edge.to);
    if (!a || !b || a === b) continue;
    const pair = [edge.from, edge.to].sort().join("|");
    const k = seenPairs.get(pair) || 0; // parallel links: stack their labels
    seenPairs.set(pair, k + 1);
    const len = Math.hypot(b.x - a.x, b.y - a.y) || 1;
    const ux = (b.x - a.x) / len;
    const uy = (b.y - a.y) / len;
    const x1 = a.x + ux * NODE_R, y1 = a.y + uy * NODE_R, x2 = b.x - ux * (NODE_R + 2), y2 = b.y - uy * (NODE_R + 2);
    const mx = (a.x + b.x) / 2, my = (a.y + b.y) / 2 + k * 26;
    const evidence = edge.evidence?.event_id;
    edges.append(svg("g", { class: `graph-edge link-${edge.link_type}`, "data-from": edge.from, "data-to": edge.to },
      svg("title", {}, `${edge.link_type}: ${edge.from} → ${edge.to}${evidence ? `, evidence event ${evidence}` : ""}`),
      svg("line", { x1: x1.toFixed(1), y1: y1.toFixed(1), x2: x2.toFixed(1), y2: y2.toFixed(1), "marker-end": "url(#arrow)" }),
      svg("text", { x: mx.toFixed(1), y: (my - 3).toFixed(1), class: "edge-label" }, edge.link_type),
      svg("text", { x: mx.toFixed(1), y: (my + 10).toFixed(1), class: "edge-evidence" }, evidence ? `event ${idTail(evidence)}` : "no event")));
  }
  root.append(edges);

  const nodes = svg("g", { class: "nodes" });
  const labelled = layout.nodes.length <= MAX_LABELLED_NODES;
  for (const p of layout.nodes) {
    const merged = triggers.has(p.ref);
    const g = svg("g", { class: `graph-node type-${p.node.type}${merged ? " merge-trigger" : ""}`, "data-ref": p.ref },
      svg("title", {}, `${p.ref}\nfirst seen ${p.node.first_seen}${merged ? "\ntriggered a merge" : ""}`));
    if (merged) g.append(svg("circle", { cx: p.x.toFixed(1), cy: p.y.toFixed(1), r: NODE_R + 6, class: "merge-ring" }));
    g.append(svg("circle", { cx: p.x.toFixed(1), cy: p.y.toFixed(1), r: NODE_R, class: "node-dot" }));
    g.append(svg("text", { x: p.x.toFixed(1), y: (p.y + 4).toFixed(1), class: "node-initial" }, p.node.type.slice(0, 2)));
    if (labelled) {
      g.append(svg("text", { x: p.x.toFixed(1), y: (p.y + NODE_R + 14).toFixed(1), class: "node-label" }, p.node.type));
      g.append(svg("text", { x: p.x.toFixed(1), y: (p.y + NODE_R + 27).toFixed(1), class: "node-hash" }, hashPrefix(p.node.hash, 10)));
    }
    nodes.append(g);
  }
  root.append(nodes);
  return root;
}

// Marks the nodes and edges of an explain path ({from, to} steps) with the class "on-path";
// an empty path clears the marks.
export function highlightPath(root, path) {
  if (!root) return;
  for (const g of root.querySelectorAll(".on-path")) g.classList.remove("on-path");
  const pairs = new Set(path.map((s) => [s.from, s.to].sort().join("|")));
  const refs = new Set(path.flatMap((s) => [s.from, s.to]));
  for (const g of root.querySelectorAll("g.graph-edge")) {
    if (pairs.has([g.dataset.from, g.dataset.to].sort().join("|"))) g.classList.add("on-path");
  }
  for (const g of root.querySelectorAll("g.graph-node")) {
    if (refs.has(g.dataset.ref)) g.classList.add("on-path");
  }
}
