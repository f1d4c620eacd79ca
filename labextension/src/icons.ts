/**
 * The Pirus icon: a pipeline of three stages. `jp-icon3` fills follow the theme.
 */
import { LabIcon } from '@jupyterlab/ui-components';

const PIRUS_SVG = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <circle cx="5" cy="6" r="3"/>
    <circle cx="19" cy="6" r="3"/>
    <circle cx="12" cy="18" r="3"/>
    <path d="M7.6 7.5l3.2 7.6 1.8-.8-3.2-7.6zM16.4 7.5l-3.2 7.6-1.8-.8 3.2-7.6zM8 5h8v2H8z"/>
  </g>
</svg>`;

export const pirusIcon = new LabIcon({ name: 'pirus-jupyter:pirus', svgstr: PIRUS_SVG });

const PIPELINE_SVG = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <path d="M4 4h16v4H4zM4 10h16v4H4zM4 16h16v4H4z" opacity=".35"/>
    <path d="M6 5h5v2H6zM9 11h6v2H9zM13 17h5v2h-5z"/>
  </g>
</svg>`;

export const pipelineIcon = new LabIcon({ name: 'pirus-jupyter:pipeline', svgstr: PIPELINE_SVG });
