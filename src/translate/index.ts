export { translateGroup, translateSelected, reassign, translateAll, type GroupTranslation, type Contribution, type TranslateOptions, DEFAULT_TRANSLATE_OPTIONS } from './group.js';
export { appliesTo, virtualServicesFor } from './select.js';
export type { Conflict } from '../model/conflicts.js';
export { PodIndex, labelKey } from './pod-index.js';
