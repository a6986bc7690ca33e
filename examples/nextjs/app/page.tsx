import { LiveSearch } from './LiveSearch';

export default async function Page({ searchParams }: { searchParams: Promise<{ q?: string }> }) {
  const { q = '' } = await searchParams;
  return (
    <main>
      <form>
        <input name="q" defaultValue={q} placeholder="Search articles" />
      </form>
      <LiveSearch query={q} />
    </main>
  );
}
