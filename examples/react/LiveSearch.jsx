// The classic scenario as a React component: search results that update themselves.
// Compare with the page in examples/demo/static/search.js, which does the same without React.
import { useCallback, useEffect, useState } from 'react';
import { useChannel, useConnectionState } from './useChannel.js';

async function search(query, ids) {
  const params = new URLSearchParams({ q: query, ...(ids ? { ids: ids.join(',') } : {}) });
  return (await (await fetch(`/api/search?${params}`)).json()).results;
}

export function LiveSearch({ query }) {
  const [results, setResults] = useState([]);
  const state = useConnectionState();
  const refetch = useCallback(() => search(query).then(setResults), [query]);
  useEffect(() => { refetch(); }, [refetch]);

  // Each event names a changed article; ask the API whether it matches the query now.
  useChannel('articles', async ({ op, id }) => {
    const rows = op === 'DELETE' ? [] : await search(query, [id]);
    setResults((current) => {
      const others = current.filter((row) => row.id !== id);
      return [...rows, ...others].sort((a, b) => b.rank - a.rank || b.id - a.id);
    });
  }, { onRecoveryFailed: refetch });

  return (
    <section>
      <small>{state}</small>
      <ul>{results.map((row) => <li key={row.id}>{row.title}</li>)}</ul>
    </section>
  );
}
