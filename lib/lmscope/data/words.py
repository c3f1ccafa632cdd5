"""Word pairs that several studies use: antonyms and countries with their capitals.

Written for this project. The in-context-learning tasks (:mod:`lmscope.icl.builtin_tasks`) and
the top-k study's few-shot prompts (:mod:`lmscope.topk.fewshot`) read the same lists.
"""

from __future__ import annotations


def _pairs(text: str, sep: str) -> tuple[tuple[str, str], ...]:
    items = [p.strip() for line in text.splitlines() for p in line.split("|") if p.strip()]
    return tuple(tuple(s.strip() for s in p.split(sep, 1)) for p in items)


_ANTONYMS = """hot cold|big small|up down|fast slow|happy sad|dark light|young old|rich poor|hard soft|open closed
early late|strong weak|high low|full empty|wet dry|clean dirty|long short|thick thin|heavy light|true false
good bad|love hate|win lose|push pull|buy sell|give take|begin end|first last|inside outside|above below
before after|top bottom|left right|north south|east west|day night|black white|friend enemy|war peace|alive dead
cheap expensive|safe dangerous|easy difficult|quiet loud|near far|tall short|wide narrow|deep shallow|sharp dull|smooth rough
sweet sour|brave cowardly|polite rude|kind cruel|wise foolish|clever stupid|beautiful ugly|accept reject|add subtract|agree disagree
always never|ancient modern|asleep awake|attack defend|backward forward|boring interesting|borrow lend|build destroy|cause effect|come go
correct wrong|increase decrease|enter exit|even odd|export import|fail succeed|female male|find lose|float sink|forget remember
freeze melt|frequent rare|future past|generous selfish|gentle rough|guilty innocent|hello goodbye|hero villain|horizontal vertical|include exclude
input output|joy sorrow|laugh cry|lead follow|legal illegal|less more|maximum minimum|minor major|morning evening|natural artificial
noisy quiet|obey disobey|on off|optimist pessimist|plus minus|positive negative|present absent|private public|question answer|raise lower
receive send|rise fall|sick healthy|spend save|start finish|stand sit|success failure|summer winter|tame wild|teacher student
tight loose|tiny huge|together apart|under over|upper lower|victory defeat|visible invisible|warm cool|whisper shout|yes no
mother father|king queen|boy girl|brother sister|husband wife|uncle aunt|son daughter|man woman|dawn dusk|sunrise sunset
heaven hell|internal external|inhale exhale|ascend descend|expand contract|pass fail|careful careless|possible impossible|honest dishonest|patient impatient
mature immature|proper improper|regular irregular|responsible irresponsible|relevant irrelevant|arrive depart|dangerous safe|lazy hardworking|thin fat|dry wet"""

_CAPITALS = """France:Paris|Germany:Berlin|Italy:Rome|Spain:Madrid|Portugal:Lisbon|United Kingdom:London|Ireland:Dublin
Belgium:Brussels|Netherlands:Amsterdam|Switzerland:Bern|Austria:Vienna|Poland:Warsaw|Czech Republic:Prague|Slovakia:Bratislava
Hungary:Budapest|Romania:Bucharest|Bulgaria:Sofia|Greece:Athens|Turkey:Ankara|Serbia:Belgrade|Croatia:Zagreb|Slovenia:Ljubljana
Bosnia and Herzegovina:Sarajevo|Albania:Tirana|North Macedonia:Skopje|Montenegro:Podgorica|Denmark:Copenhagen|Norway:Oslo
Sweden:Stockholm|Finland:Helsinki|Iceland:Reykjavik|Estonia:Tallinn|Latvia:Riga|Lithuania:Vilnius|Belarus:Minsk|Ukraine:Kyiv
Moldova:Chisinau|Russia:Moscow|Georgia:Tbilisi|Armenia:Yerevan|Azerbaijan:Baku|Kazakhstan:Astana|Uzbekistan:Tashkent
Turkmenistan:Ashgabat|Kyrgyzstan:Bishkek|Tajikistan:Dushanbe|Afghanistan:Kabul|Pakistan:Islamabad|India:New Delhi|Nepal:Kathmandu
Bhutan:Thimphu|Bangladesh:Dhaka|Sri Lanka:Colombo|China:Beijing|Mongolia:Ulaanbaatar|Japan:Tokyo|South Korea:Seoul
North Korea:Pyongyang|Taiwan:Taipei|Vietnam:Hanoi|Laos:Vientiane|Cambodia:Phnom Penh|Thailand:Bangkok|Myanmar:Naypyidaw
Malaysia:Kuala Lumpur|Indonesia:Jakarta|Philippines:Manila|Brunei:Bandar Seri Begawan|East Timor:Dili|Australia:Canberra
New Zealand:Wellington|Papua New Guinea:Port Moresby|Fiji:Suva|Iran:Tehran|Iraq:Baghdad|Syria:Damascus|Lebanon:Beirut
Jordan:Amman|Saudi Arabia:Riyadh|Yemen:Sanaa|Oman:Muscat|United Arab Emirates:Abu Dhabi|Qatar:Doha|Bahrain:Manama
Egypt:Cairo|Libya:Tripoli|Tunisia:Tunis|Algeria:Algiers|Morocco:Rabat|Sudan:Khartoum|South Sudan:Juba|Ethiopia:Addis Ababa
Eritrea:Asmara|Somalia:Mogadishu|Kenya:Nairobi|Uganda:Kampala|Tanzania:Dodoma|Rwanda:Kigali|Burundi:Gitega|Nigeria:Abuja
Ghana:Accra|Senegal:Dakar|Mali:Bamako|Niger:Niamey|Chad:N'Djamena|Cameroon:Yaounde|Gabon:Libreville|Angola:Luanda
Zambia:Lusaka|Zimbabwe:Harare|Mozambique:Maputo|Malawi:Lilongwe|Botswana:Gaborone|Namibia:Windhoek|South Africa:Pretoria
Madagascar:Antananarivo|Liberia:Monrovia|Sierra Leone:Freetown|Guinea:Conakry|Ivory Coast:Yamoussoukro|Burkina Faso:Ouagadougou
Benin:Porto-Novo|Togo:Lome|Mauritania:Nouakchott|Gambia:Banjul|Republic of the Congo:Brazzaville
Democratic Republic of the Congo:Kinshasa|Central African Republic:Bangui|Lesotho:Maseru|Eswatini:Mbabane|Canada:Ottawa
United States:Washington|Mexico:Mexico City|Guatemala:Guatemala City|Honduras:Tegucigalpa|El Salvador:San Salvador
Nicaragua:Managua|Costa Rica:San Jose|Panama:Panama City|Cuba:Havana|Jamaica:Kingston|Haiti:Port-au-Prince
Dominican Republic:Santo Domingo|Bahamas:Nassau|Barbados:Bridgetown|Trinidad and Tobago:Port of Spain|Colombia:Bogota
Venezuela:Caracas|Ecuador:Quito|Peru:Lima|Brazil:Brasilia|Chile:Santiago|Argentina:Buenos Aires|Uruguay:Montevideo
Paraguay:Asuncion|Guyana:Georgetown|Suriname:Paramaribo|Cyprus:Nicosia|Malta:Valletta|Israel:Jerusalem|Kuwait:Kuwait City"""

#: (word, antonym) pairs, in a fixed order
ANTONYMS: tuple[tuple[str, str], ...] = _pairs(_ANTONYMS, " ")
#: (country, capital) pairs, in a fixed order
CAPITALS: tuple[tuple[str, str], ...] = _pairs(_CAPITALS, ":")
