// Terminal styling that honours --no-color, NO_COLOR and non-terminal output.
import { styleText } from 'node:util';

type Style = Parameters<typeof styleText>[0];

/** A styler bound to whether colour is on. */
export interface Styler {
  color: boolean;
  paint(style: Style, text: string): string;
}

/** Colour is on for a terminal, unless NO_COLOR is set or `--no-color` was given. */
export function createStyler(wantColor: boolean, stream: NodeJS.WriteStream): Styler {
  const color = wantColor && stream.isTTY === true && !('NO_COLOR' in process.env && process.env.NO_COLOR !== '');
  return { color, paint: (style, text) => (color ? styleText(style, text) : text) };
}
