// Just enough of React's hook semantics to test a custom hook: one component instance,
// hooks by call order (useState, useRef, useCallback, useEffect), effects run after render when their dependencies change, cleanups
// before re-running and on unmount, context from `render(..., { context })`.
let current = null;

export function createContext(defaultValue) {
  return { defaultValue, Provider: 'Provider' };
}

export function createElement(type, props, ...children) {
  return { type, props, children };
}

export function useContext(context) {
  return current.contexts.get(context) ?? context.defaultValue;
}

function slot(init) {
  const index = current.index++;
  if (!(index in current.slots)) current.slots[index] = init();
  return current.slots[index];
}

export function useRef(initial) {
  return slot(() => ({ current: initial }));
}

export function useState(initial) {
  const instance = current;
  const cell = slot(() => ({ value: initial }));
  return [cell.value, (value) => {
    cell.value = value;
    instance.renders += 1;
  }];
}

export function useCallback(fn, deps) {
  const cell = slot(() => ({ deps: undefined, fn }));
  if (!cell.deps || deps.some((dep, i) => !Object.is(dep, cell.deps[i]))) {
    cell.fn = fn;
    cell.deps = deps;
  }
  return cell.fn;
}

export function useEffect(effect, deps) {
  const cell = slot(() => ({ deps: undefined, cleanup: undefined }));
  const changed = !cell.deps || !deps || deps.some((dep, i) => !Object.is(dep, cell.deps[i]));
  if (changed) current.pending.push({ cell, effect, deps });
}

export function render(component, props, { context } = {}) {
  const instance = { slots: [], contexts: new Map(context ?? []), renders: 0, pending: [] };
  const run = (nextProps) => {
    current = instance;
    instance.index = 0;
    instance.pending = [];
    const output = component(nextProps);
    current = null;
    for (const { cell, effect, deps } of instance.pending) {
      cell.cleanup?.();
      cell.cleanup = effect();
      cell.deps = deps;
    }
    return output;
  };
  run(props);
  return {
    instance,
    rerender: run,
    unmount() {
      for (const cell of instance.slots) cell?.cleanup?.();
    },
  };
}
