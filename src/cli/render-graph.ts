// `chainform graph` output: Mermaid (renders on GitHub and in most Markdown tools) or Graphviz
// DOT. Backings are drawn below the images that read them.
import type { ChainGraph, GraphNode } from '../planner/chain-graph.js';
import { formatBytes, shownPath } from './format.js';

function label(node: GraphNode, cwd: string): string[] {
  const name = shownPath(cwd, node.path, node.path);
  const size = node.bytes === undefined ? '' : `, ${node.estimated ? 'writes ~' : ''}${formatBytes(node.bytes)}`;
  return [node.id ? `${node.id}: ${name}` : name, `${node.format}${size}`];
}

/** Mermaid flowchart, bottom-up: an arrow goes from an overlay to its backing. */
export function renderMermaid(graph: ChainGraph, cwd: string): string {
  const key = new Map(graph.nodes.map((node, i) => [node.path, `n${i}`]));
  // Mermaid labels: quotes and markup characters become entities.
  const entities = (text: string) => text.replace(/[&"<>#]/g, (c) => `#${c.charCodeAt(0)};`);
  const lines = ['flowchart BT'];
  for (const node of graph.nodes) {
    lines.push(`  ${key.get(node.path)}["${label(node, cwd).map(entities).join('<br/>')}"]`);
  }
  for (const edge of graph.edges) lines.push(`  ${key.get(edge.from)} --> ${key.get(edge.to)}`);
  return lines.join('\n');
}

/** Graphviz DOT, bottom-up like the Mermaid form. */
export function renderDot(graph: ChainGraph, cwd: string): string {
  const quote = (text: string) => `"${text.replaceAll('\\', '\\\\').replaceAll('"', '\\"').replaceAll('\n', '\\n')}"`;
  const lines = ['digraph chains {', '  rankdir=BT;', '  node [shape=box];'];
  for (const node of graph.nodes) {
    lines.push(`  ${quote(node.path)} [label=${quote(label(node, cwd).join('\n'))}];`);
  }
  for (const edge of graph.edges) lines.push(`  ${quote(edge.from)} -> ${quote(edge.to)};`);
  lines.push('}');
  return lines.join('\n');
}
