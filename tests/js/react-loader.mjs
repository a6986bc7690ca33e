// Module resolution hook for the hook's test: `import ... from 'react'` gets fake-react.mjs,
// so the package's React hook (clients/js/src/react.js) is tested as shipped, without npm or
// a build step.
export async function resolve(specifier, context, next) {
  if (specifier === 'react') return { url: new URL('./fake-react.mjs', import.meta.url).href, shortCircuit: true };
  return next(specifier, context);
}
