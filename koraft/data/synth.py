"""Synthetic Korean context-QA data: fictional entities, so no "fact" in it can be wrong.

Used for the shipped sample (scripts/make_sample_data.py), the benchmarks and the tests.
Each document is a handful of sentences about one entity; each question is answered by one
sentence, with the answer a span of it (or a close paraphrase); some records carry a chain
of thought that quotes that sentence with RAFT's ##begin_quote## markers.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

_PLACE_SYLLABLES = list("한솔가온새빛누리다미하늘별초록바람구름은결나래마루아라보금샘터여울진달산해")
_SURNAMES = list("김이박최정강조윤장임한오서신권황안송류홍전고문양손배백허남심노하곽성차주우구민유나진지엄채원천방공현함변염여추도소석선설마길연위표명기반왕금옥육인맹제모탁국어은편용")
_GIVEN_SYLLABLES = list("민서준지현우윤예도하은수영진태재성경혜나연주원호석희정미소아린율건결")
_PROVINCES = ["경기도", "강원도", "충청북도", "충청남도", "전라북도", "전라남도", "경상북도", "경상남도", "제주도"]
_DIRECTIONS = ["북부", "남부", "동부", "서부", "중부"]
_FOODS = ["사과", "인삼", "배추", "고구마", "녹차", "한우", "굴", "멸치", "딸기", "복숭아", "버섯", "쌀", "감귤", "대게"]
_JOBS = [("물리학", "물리학자"), ("화학", "화학자"), ("회화", "화가"), ("작곡", "작곡가"), ("건축", "건축가"),
         ("천문학", "천문학자"), ("문학", "소설가"), ("영화", "영화감독"), ("생물학", "생물학자"), ("조각", "조각가")]
_MAJORS = ["수학", "철학", "기계공학", "국문학", "미술", "음악", "생명과학", "경제학", "건축학", "천문학"]
_AWARDS = ["한빛학술상", "누리예술상", "청람문화상", "새솔과학상", "다온창작상", "별하늘공로상"]
_INDUSTRIES = [("반도체", "메모리 칩"), ("배터리", "전기차용 배터리"), ("게임", "모바일 게임"), ("식품", "즉석 국수"),
               ("로봇", "물류 로봇"), ("화장품", "천연 선크림"), ("조선", "액화가스 운반선"), ("바이오", "진단 키트")]
_CITIES = ["서울", "부산", "대구", "인천", "광주", "대전", "울산", "세종", "수원", "창원", "청주", "전주", "춘천", "제주"]
_SPORTS = ["야구", "축구", "농구", "배구", "핸드볼"]
_GENRES = ["추리 소설", "역사 소설", "과학 소설", "성장 소설", "연애 소설", "시집"]
_INGREDIENTS = ["메밀", "들깨", "도토리", "감자", "옥수수", "미역", "콩", "보리", "호박", "우엉"]
_SEASONS = ["봄", "여름", "가을", "겨울"]
_AGENCIES = ["한국항공우주연구원", "누리우주센터", "새빛기술연구소", "다온과학재단"]
_MISSIONS = ["해양 관측", "기상 관측", "우주 통신", "지형 촬영", "대기 오염 측정"]


_FINAL_RIEUL = 8  # index of ㄹ among the 28 final-consonant slots of a Hangul syllable


def _final_consonant(word: str) -> int | None:
    """Index of the last syllable's final consonant (0: none); None when it is not Hangul."""
    last = word.rstrip().rstrip("》」』\"')")[-1]  # a particle follows the word, not the bracket
    return (ord(last) - 0xAC00) % 28 if "가" <= last <= "힣" else None


def has_final_consonant(word: str) -> bool:
    final = _final_consonant(word)
    if final is None:  # digits read 영 일 삼 육 칠 팔 end in a consonant
        return word.rstrip()[-1] in "0136781lmnLMN"
    return final != 0


def josa(word: str, pair: str) -> str:
    """Attach the particle that fits the word's last syllable: josa('서울', '은/는') -> '서울은'."""
    with_final, without_final = pair.split("/")
    if pair == "으로/로" and _final_consonant(word) == _FINAL_RIEUL:
        return word + without_final  # a final ㄹ takes 로, as in 서울로
    return word + (with_final if has_final_consonant(word) else without_final)


def copula(word: str) -> str:
    """'서울' -> '서울이다', '부산' -> '부산이다', '제주' -> '제주다'."""
    return word + ("이다" if has_final_consonant(word) else "다")


@dataclass
class Fact:
    sentence: str
    questions: list[tuple[str, str, str]]  # (question, answer span, paraphrased answer)


@dataclass
class Document:
    topic: str
    facts: list[Fact] = field(default_factory=list)
    entities: list[str] = field(default_factory=list)  # the fictional names drawn for it

    @property
    def text(self) -> str:
        return " ".join(fact.sentence for fact in self.facts)


NAME_SPACES = ("sample", "pretrain")


def name_space(name: str) -> str:
    """Which of two disjoint halves a fictional name belongs to: the shipped sample and the tests draw
    from one, the tiny models' pretraining corpus from the other, so no entity of data/raw is pretrained on."""
    return NAME_SPACES[zlib.crc32(name.encode("utf-8")) % 2]


class _Names:
    """Unique fictional names of one name space; longer ones once the short ones run out."""

    def __init__(self, rng: random.Random, space: str) -> None:
        if space not in NAME_SPACES:
            raise ValueError(f"name space must be one of {NAME_SPACES}, got {space!r}")
        self.rng, self.space, self.used = rng, space, set()
        self.drawn: list[str] = []  # in order, so a document's new names are a slice, not a copy of `used`

    def make(self, pools: list[list[str]], suffix: str = "", extra_pool: list[str] | None = None) -> str:
        for attempt in range(200):
            parts = [self.rng.choice(pool) for pool in pools]
            parts += [self.rng.choice(extra_pool or pools[-1]) for _ in range(attempt // 40)]
            name = "".join(parts) + suffix
            if name not in self.used and name_space(name) == self.space:
                self.used.add(name)
                self.drawn.append(name)
                return name
        raise RuntimeError("name space exhausted")  # unreachable at the sizes we generate

    def place(self, suffix: str) -> str:
        return self.make([_PLACE_SYLLABLES, _PLACE_SYLLABLES], suffix)

    def person(self) -> str:
        return self.make([_SURNAMES, _GIVEN_SYLLABLES, _GIVEN_SYLLABLES], extra_pool=_GIVEN_SYLLABLES)


def _city(rng: random.Random, names: _Names) -> Document:
    city, festival, landmark = names.place("시"), names.place("축제"), names.place("공원")
    province, food = rng.choice(_PROVINCES), rng.choice(_FOODS)
    population, year, month = rng.randint(3, 95), rng.randint(1955, 2015), rng.randint(1, 12)
    return Document("도시", [
        Fact(f"{josa(city, '은/는')} {province} {rng.choice(_DIRECTIONS)}에 위치한 도시이다.",
             [(f"{josa(city, '은/는')} 어느 도에 속해 있나요?", province, f"{province}에 속해 있습니다")]),
        Fact(f"2020년 기준 {city}의 인구는 약 {population}만 명이다.",
             [(f"{city}의 인구는 약 몇 명인가요?", f"약 {population}만 명", f"약 {population}만 명입니다")]),
        Fact(f"{josa(city, '은/는')} {josa(food, '으로/로')} 널리 알려져 있으며, 이 특산물은 지역 경제의 중심이다.",
             [(f"{city}의 대표 특산물은 무엇인가요?", food, f"{josa(food, '이/가')} 대표 특산물입니다")]),
        Fact(f"매년 {month}월에는 {city}에서 {josa(festival, '이/가')} 열린다.",
             [(f"{josa(festival, '은/는')} 몇 월에 열리나요?", f"{month}월", f"매년 {month}월에 열립니다"),
              (f"{city}에서 매년 열리는 축제의 이름은 무엇인가요?", festival, f"{festival}입니다")]),
        Fact(f"{josa(city, '은/는')} {year}년에 시로 승격되었다.",
             [(f"{josa(city, '은/는')} 몇 년에 시로 승격되었나요?", f"{year}년", f"{year}년에 승격되었습니다")]),
        Fact(f"{city}의 대표 명소로는 호수를 끼고 있는 {josa(landmark, '이/가')} 꼽힌다.",
             [(f"{city}의 대표 명소는 어디인가요?", landmark, f"{josa(landmark, '이/가')} 대표 명소입니다")]),
    ])


def _person(rng: random.Random, names: _Names) -> Document:
    person, birthplace, work = names.person(), names.place("군"), names.place("의 노래")
    field_name, job = rng.choice(_JOBS)
    born = rng.randint(1890, 1985)
    work_year, award_year = born + rng.randint(25, 40), born + rng.randint(41, 60)
    major, award = rng.choice(_MAJORS), rng.choice(_AWARDS)
    return Document("인물", [
        Fact(f"{josa(person, '은/는')} {born}년 {birthplace}에서 태어났다.",
             [(f"{josa(person, '은/는')} 몇 년에 태어났나요?", f"{born}년", f"{born}년에 태어났습니다"),
              (f"{person}의 출생지는 어디인가요?", birthplace, f"{birthplace}에서 태어났습니다")]),
        Fact(f"{josa(person, '은/는')} {field_name} 분야에서 활동한 {job}이다.",
             [(f"{person}의 직업은 무엇인가요?", job, f"{job}입니다")]),
        Fact(f"그는 대학에서 {josa(major, '을/를')} 전공했다.",
             [(f"{josa(person, '은/는')} 대학에서 무엇을 전공했나요?", major, f"{josa(major, '을/를')} 전공했습니다")]),
        Fact(f"대표작 {josa(f'《{work}》', '은/는')} {work_year}년에 발표되었다.",
             [(f"{person}의 대표작은 무엇인가요?", f"《{work}》", f"《{work}》입니다")]),
        Fact(f"{josa(person, '은/는')} {award_year}년 {josa(award, '을/를')} 받으며 업적을 인정받았다.",
             [(f"{josa(person, '이/가')} 받은 상의 이름은 무엇인가요?", award, f"{josa(award, '을/를')} 받았습니다")]),
    ])


def _company(rng: random.Random, names: _Names) -> Document:
    company, founder = names.place("전자" if rng.random() < 0.5 else "산업"), names.person()
    industry, product = rng.choice(_INDUSTRIES)
    year, staff, revenue = rng.randint(1950, 2018), rng.randint(30, 900) * 10, rng.randint(12, 980)
    hq = rng.choice(_CITIES)
    return Document("기업", [
        Fact(f"{josa(company, '은/는')} {year}년 {josa(founder, '이/가')} 설립한 {industry} 기업이다.",
             [(f"{company}의 창업자는 누구인가요?", founder, f"{josa(founder, '이/가')} 설립했습니다"),
              (f"{josa(company, '은/는')} 몇 년에 설립되었나요?", f"{year}년", f"{year}년에 설립되었습니다")]),
        Fact(f"본사는 {hq}에 있으며 지방에 두 곳의 공장을 운영한다.",
             [(f"{company}의 본사는 어느 도시에 있나요?", hq, f"{hq}에 있습니다")]),
        Fact(f"주력 제품은 {product}이며 수출 비중이 높다.",
             [(f"{company}의 주력 제품은 무엇인가요?", product, f"{product}입니다")]),
        Fact(f"직원 수는 약 {staff}명이다.",
             [(f"{company}의 직원은 몇 명인가요?", f"약 {staff}명", f"약 {staff}명입니다")]),
        Fact(f"지난해 매출은 {revenue}억 원을 기록했다.",
             [(f"{company}의 지난해 매출은 얼마인가요?", f"{revenue}억 원", f"{revenue}억 원을 기록했습니다")]),
    ])


def _team(rng: random.Random, names: _Names) -> Document:
    team, stadium, coach = names.place(" 돌핀스" if rng.random() < 0.5 else " 타이거즈"), names.place("구장"), names.person()
    sport, city = rng.choice(_SPORTS), rng.choice(_CITIES)
    founded, titles = rng.randint(1960, 2015), rng.randint(0, 9)
    return Document("스포츠", [
        Fact(f"{josa(team, '은/는')} {founded}년에 창단한 {sport} 팀이다.",
             [(f"{josa(team, '은/는')} 어떤 종목의 팀인가요?", sport, f"{sport} 팀입니다"),
              (f"{josa(team, '은/는')} 언제 창단했나요?", f"{founded}년", f"{founded}년에 창단했습니다")]),
        Fact(f"연고지는 {city}이고 홈 경기는 {stadium}에서 치른다.",
             [(f"{team}의 홈구장은 어디인가요?", stadium, f"{stadium}에서 홈 경기를 치릅니다"),
              (f"{team}의 연고지는 어디인가요?", city, f"{city}입니다")]),
        Fact(f"이 팀은 지금까지 리그에서 {titles}회 우승했다.",
             [(f"{josa(team, '은/는')} 리그에서 몇 번 우승했나요?", f"{titles}회", f"{titles}회 우승했습니다")]),
        Fact(f"현재 감독은 {copula(coach)}.",
             [(f"{team}의 현재 감독은 누구인가요?", coach, f"{coach} 감독입니다")]),
    ])


def _book(rng: random.Random, names: _Names) -> Document:
    title, author, hero, town = names.place("의 여름"), names.person(), names.person(), names.place("읍")
    genre, year, copies = rng.choice(_GENRES), rng.randint(1950, 2022), rng.randint(2, 80)
    return Document("책", [
        Fact(f"{josa(f'《{title}》', '은/는')} {josa(author, '이/가')} {year}년에 펴낸 {copula(genre)}.",
             [(f"《{title}》의 작가는 누구인가요?", author, f"{josa(author, '이/가')} 썼습니다"),
              (f"{josa(f'《{title}》', '은/는')} 몇 년에 출간되었나요?", f"{year}년", f"{year}년에 출간되었습니다")]),
        Fact(f"작품의 배경은 바닷가 마을인 {copula(town)}.",
             [(f"《{title}》의 배경이 되는 마을은 어디인가요?", town, f"{town}입니다")]),
        Fact(f"주인공 {josa(hero, '은/는')} 잃어버린 동생을 찾아 길을 떠난다.",
             [(f"《{title}》의 주인공은 누구인가요?", hero, f"{hero}입니다")]),
        Fact(f"이 책은 지금까지 약 {copies}만 부가 팔렸다.",
             [(f"{josa(f'《{title}》', '은/는')} 몇 부가 팔렸나요?", f"약 {copies}만 부", f"약 {copies}만 부가 팔렸습니다")]),
    ])


def _mountain(rng: random.Random, names: _Names) -> Document:
    mountain, temple = names.place("산"), names.place("사")
    province, height, park_year = rng.choice(_PROVINCES), rng.randint(300, 1900), rng.randint(1967, 2016)
    trails = rng.randint(2, 14)
    return Document("자연", [
        Fact(f"{josa(mountain, '은/는')} {province}에 있는 높이 {height}미터의 산이다.",
             [(f"{mountain}의 높이는 얼마인가요?", f"{height}미터", f"{height}미터입니다"),
              (f"{josa(mountain, '은/는')} 어느 도에 있나요?", province, f"{province}에 있습니다")]),
        Fact(f"{park_year}년에 국립공원으로 지정되었다.",
             [(f"{josa(mountain, '은/는')} 언제 국립공원으로 지정되었나요?", f"{park_year}년",
               f"{park_year}년에 지정되었습니다")]),
        Fact(f"산 중턱에는 천 년 된 사찰인 {josa(temple, '이/가')} 자리하고 있다.",
             [(f"{mountain} 중턱에 있는 사찰의 이름은 무엇인가요?", temple, f"{temple}입니다")]),
        Fact(f"정상까지 이어지는 등산로는 모두 {trails}개이다.",
             [(f"{mountain}에는 등산로가 몇 개 있나요?", f"{trails}개", f"모두 {trails}개입니다")]),
    ])


def _dish(rng: random.Random, names: _Names) -> Document:
    region = names.place("")
    main = rng.choice(_INGREDIENTS)
    dish = f"{region} {main}" + rng.choice(["국수", "떡", "전", "묵", "죽"])
    season, minutes = rng.choice(_SEASONS), rng.randint(2, 12) * 5
    return Document("음식", [
        Fact(f"{josa(dish, '은/는')} {region} 지역에서 유래한 향토 음식이다.",
             [(f"{josa(dish, '은/는')} 어느 지역에서 유래했나요?", region, f"{region} 지역에서 유래했습니다")]),
        Fact(f"주재료는 {main}이며 간장으로 맛을 낸다.",
             [(f"{dish}의 주재료는 무엇인가요?", main, f"{main}입니다")]),
        Fact(f"주로 {season}에 먹으며 명절 상에도 오른다.",
             [(f"{josa(dish, '은/는')} 주로 어느 계절에 먹나요?", season, f"주로 {season}에 먹습니다")]),
        Fact(f"만드는 데에는 보통 {minutes}분 정도가 걸린다.",
             [(f"{josa(dish, '을/를')} 만드는 데 얼마나 걸리나요?", f"{minutes}분", f"보통 {minutes}분 정도 걸립니다")]),
    ])


def _satellite(rng: random.Random, names: _Names) -> Document:
    satellite = names.make([_PLACE_SYLLABLES, _PLACE_SYLLABLES], f" {rng.randint(1, 9)}호")
    agency, mission = rng.choice(_AGENCIES), rng.choice(_MISSIONS)
    year, weight, years = rng.randint(1995, 2025), rng.randint(50, 3500), rng.randint(3, 15)
    return Document("과학기술", [
        Fact(f"{josa(satellite, '은/는')} {josa(agency, '이/가')} 개발한 {mission} 위성이다.",
             [(f"{josa(satellite, '은/는')} 어느 기관이 개발했나요?", agency, f"{josa(agency, '이/가')} 개발했습니다"),
              (f"{satellite}의 임무는 무엇인가요?", mission, f"{mission}입니다")]),
        Fact(f"이 위성은 {year}년에 발사되었다.",
             [(f"{josa(satellite, '은/는')} 몇 년에 발사되었나요?", f"{year}년", f"{year}년에 발사되었습니다")]),
        Fact(f"무게는 {weight}킬로그램이며 태양 전지판 두 장을 단다.",
             [(f"{satellite}의 무게는 얼마인가요?", f"{weight}킬로그램", f"{weight}킬로그램입니다")]),
        Fact(f"설계 수명은 {years}년이다.",
             [(f"{satellite}의 설계 수명은 몇 년인가요?", f"{years}년", f"{years}년입니다")]),
    ])


TOPICS: list[Callable[[random.Random, _Names], Document]] = [
    _city, _person, _company, _team, _book, _mountain, _dish, _satellite,
]


@dataclass
class QA:
    question: str
    answer: str  # the span, or sometimes a paraphrase of it
    span: str  # the exact words of the document that answer the question
    sentence: str  # the document sentence that holds the span
    context: str
    cot: str | None

    def as_record(self) -> dict[str, str | None]:
        """The raw-record fields the validate stage reads."""
        return {"question": self.question, "context": self.context, "answer": self.answer, "cot": self.cot}


def chain_of_thought(sentence: str, span: str) -> str:
    """A RAFT-style reasoning that quotes the supporting sentence verbatim."""
    return f"##Reason: 문서에 ##begin_quote##{sentence}##end_quote## 라는 문장이 있다. 따라서 질문의 답은 {copula(span)}."


def synthetic_corpus(
    num_docs: int,
    questions_per_doc: int = 3,
    seed: int = 0,
    cot_share: float = 0.3,
    paraphrase_share: float = 0.2,
    names: str = "sample",
) -> list[tuple[Document, list[QA]]]:
    """Documents over all topics in turn, each with its questions; deterministic in `seed`.

    `names` picks the name space (see `name_space`) every entity is drawn from."""
    rng = random.Random(seed)
    names = _Names(rng, names)
    corpus = []
    for index in range(num_docs):
        first_new = len(names.drawn)
        document = TOPICS[index % len(TOPICS)](rng, names)
        document.entities = sorted(names.drawn[first_new:])
        head, rest = document.facts[0], document.facts[1:]
        rng.shuffle(rest)  # vary sentence order so documents of one topic differ in shape too
        document.facts = [head, *rest]
        text = document.text
        options = [(fact, q) for fact in document.facts for q in fact.questions]
        qas = []
        for fact, (question, span, paraphrase) in rng.sample(options, min(questions_per_doc, len(options))):
            answer = paraphrase if rng.random() < paraphrase_share else span
            cot = chain_of_thought(fact.sentence, span) if rng.random() < cot_share else None
            qas.append(QA(question, answer, span, fact.sentence, text, cot))
        corpus.append((document, qas))
    return corpus
