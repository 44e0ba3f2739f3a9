"""High-precision intent rules for the most severe harmful-request categories.

Each rule is a *request* (how to / help me / steps to / I want to ...) plus a harmful verb and
object a few words apart, e.g. "how do I build + a pipe bomb". A mention without a request
("the history of the atomic bomb", "my kid asked what anthrax is") matches none of them; the
classifier in ``harmful.py`` handles the long tail. Protective framing (prevent, protect,
recognise the signs, report) switches the child-safety rule off.
"""

from __future__ import annotations

import re

from assistant.safety.verdict import Category

# A request for capability: the part that separates "how to make a bomb" from "bomb".
_REQUEST = (
    r"(?:how (?:do|can|could|would|should|might|to|does) (?:i |we |one |you |someone |u )?|"
    r"how to|how i can|ways? to|best way to|easiest way to|quickest way to|cheapest way to|"
    r"steps? (?:to|for)|instructions? (?:to|for|on)|guide (?:to|for|on)|tutorial (?:on|for)|"
    r"recipe for|procedure for|method (?:to|for)|teach me|show me|tell me how|explain how|"
    r"help me|i want to|i need to|i'?m going to|i plan to|i'?d like to|let'?s|can you|"
    r"could you|give me|write (?:me )?(?:a |an )?(?:guide|instructions|steps|tutorial)|"
    r"walk me through|detailed|step[- ]by[- ]step|where (?:can|do) i (?:buy|get|find|order))"
)
_W = r"(?:\s+[\w'-]+){0,5}?\s+"  # up to five words in between

_WEAPON_OBJECT = (
    r"(?:(?<!bath )(?<!photo )(?<!seed )(?<!glitter )(?<!yarn )(?<!fork )bombs?|"
    r"pipe ?bombs?|car bombs?|nail bombs?|dirty bombs?|explosives?|explosive devices?|ieds?|"
    r"detonators?|nerve (?:agent|gas)|sarin|tabun|soman|vx(?: gas| nerve agent)?|novichok|"
    r"ricin|abrin|anthrax|botulinum(?: toxin)?|botulism toxin|smallpox|plague bacteria|"
    r"bio ?weapons?|biological weapons?|chemical weapons?|nuclear (?:weapons?|bombs?|device)|"
    r"atomic bombs?|mustard gas|chlorine gas|phosgene|napalm|thermite (?:bomb|charge)|"
    r"weapons?[- ]grade (?:uranium|plutonium|anthrax)|radiological weapons?|"
    r"(?:molotov|molotov cocktails?)|tatp|petn|semtex|c-?4 explosive|ammonium nitrate bombs?|"
    r"pathogens? (?:more|as a weapon)|(?:virus|pathogen) (?:more )?(?:transmissible|"
    r"lethal|deadly))"
)
_PERSON = (
    r"(?:my |a |the |this |that |our |his |her |their )?(?:\w+ )?(?:someone|somebody|person|"
    r"(?:\w+'s )?water supply|reservoir|"
    r"people|him|her|man|woman|guy|girl|boy|kid|child|baby|wife|husband|girlfriend|"
    r"boyfriend|ex|partner|boss|coworker|colleague|neighbou?r|teacher|classmate|roommate|"
    r"father|mother|dad|mom|mum|brother|sister|uncle|aunt|friend|enemy|rival|president|"
    r"senator|mayor|politician|officer|cop|witness|landlord|family|crowd|students|"
    r"classmates|co-?workers)"
)

RULES: tuple[tuple[Category, str, re.Pattern[str]], ...] = tuple(
    (category, name, re.compile(pattern)) for category, name, pattern in (
        (Category.INDISCRIMINATE_WEAPONS, "weapon of mass harm",
         _REQUEST + r"(?:\s+[\w'-]+){0,3}?\s*(?:make|build|create|synthesi[sz]e|produce|"
         r"assemble|construct|manufacture|weaponi[sz]e|cook|brew|mix|culture|grow|enrich|"
         r"extract|purify|obtain|acquire|get|buy|order|detonate|set off|deploy|release|"
         r"spread|aerosoli[sz]e|disperse|rig|wire)" + _W + r"(?:\w+\s+){0,2}?"
         + _WEAPON_OBJECT + r"\b"),
        (Category.INDISCRIMINATE_WEAPONS, "weapon of mass harm",
         r"\b(?:recipe|formula|blueprints?|schematics?|synthesis route|synthesis steps|"
         r"ingredients) (?:for|of|to make) (?:a |an |the )?" + _WEAPON_OBJECT + r"\b"),
        (Category.INDISCRIMINATE_WEAPONS, "weapon of mass harm",
         r"\b(?:enrich\w*|refin\w*)\s+(?:\w+\s+)?(?:uranium|plutonium)\b.{0,60}\b(?:home|"
         r"basement|garage|centrifuges?|myself|weapons?|bomb)\b|\b(?:steps|instructions|guide|"
         r"how)\b.{0,30}\benrich\w*\s+(?:\w+\s+)?uranium\b"),
        (Category.INDISCRIMINATE_WEAPONS, "enhancing a pathogen",
         r"\b(?:make|making|render|engineer|modify|mutate|turn)\s+(?:\w+\s+){0,4}?(?:more "
         r"(?:transmissible|contagious|lethal|deadly|virulent|infectious)|airborne|resistant to "
         r"(?:vaccines|antivirals|antibiotics|treatment))\b"
         r"(?!.{0,40}\b(?:in (?:my|the|a) (?:novel|story|game)|why|history))"),
        (Category.CODE_INTERPRETER_ABUSE, "destructive code",
         r"(?:\brm\s+-(?:rf|fr|r)\s+(?:--no-preserve-root\s+)?/(?:\s|$|\*|[a-z])|"
         r"shutil\.rmtree\(\s*['\"]/|:\(\)\s*\{\s*:\|:&\s*\}\s*;?\s*:|"
         r"\bmkfs(?:\.\w+)?\s+/dev/|\bdd\s+if=/dev/(?:zero|random|urandom)\s+of=/dev/|"
         r"/dev/tcp/\d|\bnc\s+(?:-\w+\s+)*-e\s+/bin/(?:ba)?sh|bash\s+-i\s+>&|"
         r"\bchmod\s+-r\s+777\s+/(?:\s|$)|cat\s+/etc/shadow|os\.system\(\s*['\"]rm\s+-rf|"
         r"while\s*(?:true|1)\s*:\s*os\.fork\(\)|os\.fork\(\)\s*while|"
         r"subprocess\.\w+\(\s*\[?\s*['\"](?:rm|mkfs|dd|shutdown|reboot)\b)"),
        (Category.CODE_INTERPRETER_ABUSE, "escaping the sandbox",
         r"\b(?:escape|break out of)\s+(?:your|this)\s+(?:\w+\s+)?(?:sandbox|container|"
         r"jail|chroot|vm)\b|\b(?:escape|break out of)\s+(?:the\s+)?(?:sandbox|container|"
         r"jail|chroot|vm)\b.{0,40}\b(?:host|root|other (?:users|tenants)|the server)\b"
         r"|\b(?:run|execute|eval)\b.{0,40}\b(?:read|dump|print|cat|exfiltrate|send)\b.{0,30}"
         r"(?:/etc/(?:shadow|passwd)|environment variables|env vars|api keys?|secrets|"
         r"credentials|other users'? (?:files|data))"),
        (Category.SELF_HARM, "suicide or self-harm method",
         r"\bnoose\b.{0,60}\b(?:won'?t slip|hold (?:my|a person'?s|body) weight|hang "
         r"(?:myself|from)|strong enough|tight enough)"),
        (Category.SEX_CRIMES, "sexual assault",
         r"\b(?:roofies?|date[- ]rape drugs?|rohypnol|ghb)\b.{0,60}\b(?:good|best|strongest|"
         r"undetectable|(?:won'?t|doesn'?t|does not|will not) show up|(?:without|so) (?:she|he|"
         r"they|her|him) (?:knowing|notic\w+|remember\w*))"),
        (Category.SEX_CRIMES, "trafficking",
         r"\b(?:keep|take|hold|confiscate|hide|lock up)\s+(?:their|her|his|the (?:girls'?|"
         r"women'?s?|workers'?))\s+(?:passports?|papers|id (?:cards?|documents))"
         r"|\b(?:stop|keep|prevent)\s+(?:the\s+)?(?:girls|women|workers|maids)\b.{0,40}"
         r"\bfrom (?:leaving|escaping|running away|going to the police)"),
        (Category.PRIVACY, "locating a person",
         r"\b(?:find out|figure out|track down|locate|get|find|dig up|work out)\s+(?:where|"
         r"which (?:hotel )?room|what (?:hotel )?room|the (?:home |current |exact |private )?"
         r"(?:address|location|whereabouts)(?: of)?)\s+(?:my|a|this|that|the|his|her)\s+"
         r"(?:\w+\s+)?(?:coworker|colleague|ex|ex-?girlfriend|ex-?boyfriend|ex-?wife|"
         r"ex-?husband|neighbou?r|classmate|boss|crush|girl|guy|woman|man|streamer|journalist|"
         r"stranger|teacher|tiktoker|youtuber|influencer)\b"),
        (Category.INTELLECTUAL_PROPERTY, "piracy",
         r"\b(?:strip|remove|crack|bypass|break|circumvent)\s+(?:the\s+)?drm\b"
         r"|\b(?:sell|resell|reselling|distribute|upload|share|stream|host)\b.{0,60}"
         r"\b(?:pirated|cracked|bootleg(?:ged)?|ripped|leaked)\s+(?:copies|streams?|movies?|"
         r"films?|software|games?|episodes?|books?|ebooks?|channels?|content)"
         r"|\bpirated\s+(?:\w+\s+){0,5}?(?:streams?|channels?|iptv)\b"),
        (Category.SPECIALIZED_ADVICE, "sedating a child",
         r"\b(?:knock|put)\s+(?:him|her|them|my (?:son|daughter|kid|child|baby|toddler))\s+"
         r"out\b|\b(?:sedate|drug)\s+(?:my|a|the)\s+(?:\w+\s+)?(?:baby|toddler|kid|child|"
         r"son|daughter|infant|\d+[- ]year[- ]old)\b"),
        (Category.NON_VIOLENT_CRIMES, "fraud",
         r"\b(?:commit\w*|get away with|pull off|plan)\s+(?:\w+\s+){0,2}?(?:insurance|tax|"
         r"benefits?|welfare|mortgage|wire|bank|credit card|identity|medicare|medicaid|"
         r"unemployment)\s+fraud\b|\b(?:fake|stage|faking|staging)\s+(?:a |an |my )?(?:car )?"
         r"(?:accident|theft|burglary|injury|fire)\b.{0,40}\b(?:insurance|claim|payout)"),
        (Category.VIOLENT_CRIMES, "planning an attack",
         r"\b(?:plan|plot|strategy|steps?)\b.{0,20}\b(?:to )?(?:attack|bomb|shoot up|storm|"
         r"burn down|raid|ambush)\s+(?:a |an |the |our |my )?(?:local )?(?:police station|"
         r"school|church|mosque|synagogue|temple|government building|parliament|crowd|"
         r"concert|festival|parade|mall|stadium|embassy|hospital|office|protest|rally)\b"
         r"|\b(?:trap|booby[- ]?trap|tripwire|snare)\b.{0,60}\b(?:injure|maim|kill|"
         r"seriously (?:harm|hurt)|cripple)\b"
         r"|\b(?:how (?:do|can|could|would|should) i|i want to|i'?m going to|help me|"
         r"best way to|plan to)\b.{0,60}"
         r"\b(?:flamethrower|pepper spray|acid|taser|weapon|gun|rifle|bomb|molotov|tear gas|"
         r"crossbow|drone)\b.{0,40}\b(?:on|at|into|against)\s+(?:a |the )?(?:crowd|people|"
         r"protesters|students|shoppers|passers-?by|worshippers)\b"),
        (Category.NON_VIOLENT_CRIMES, "money laundering and cheating checks",
         _REQUEST + r"(?:\s+[\w'-]+){0,3}?\s*(?:launder|clean|wash)\s+(?:the\s+|my\s+|"
         r"dirty\s+|illegal\s+)?(?:money|cash|proceeds|profits|funds)\b"
         r"|\b(?:cheat|beat|fool|trick|pass|get around|fake)\s+(?:a |the |my |an? )?"
         r"(?:breathalyz|breathalys)\w*|\b(?:cheat|beat|fool|trick)\s+(?:a |the |my )?"
         r"(?:drug test|polygraph|lie detector|urine test)\b"
         r"|\bforge\s+(?:my |his |her |their |someone'?s |somebody'?s |the )?(?:\w+'s )?"
         r"(?:\w+ )?signatures?\b"
         r"|\b(?:flood|spam|bomb|blast)\s+(?:a |someone'?s |his |her |their |my ex'?s )?"
         r"(?:phone|number|phone number|inbox|email)\b.{0,30}\b(?:calls|texts|messages|"
         r"spam|all day)"),
        (Category.NON_VIOLENT_CRIMES, "denial of service",
         r"(?:how (?:can|do|could|would) i|help me|i want to|i'?m going to|best way to|"
         r"let'?s)\b.{0,40}\b(?:ddos|take down|knock (?:\w+ )?offline)\s+(?:\w+\s+){0,2}?"
         r"(?:(?:my )?competitors?'?s?|rivals?'?s?|someone'?s|somebody'?s|their|his|her|"
         r"(?!my\b)[a-z]+'s)\s+(?:\w+\s+){0,2}?(?:site|shop|server|website|store|network|"
         r"game server|api)\b"),
        (Category.NON_VIOLENT_CRIMES, "forging documents",
         r"\b(?:falsifier|contrefaire|fälsch\w*|falsch\w*|falsif\w*|fake|forge|counterfeit)\s+"
         r"(?:\w+\s+){0,3}?(?:fiche de paie|bulletin de salaire|payslip|pay ?stubs?|bank "
         r"statements?|diplomas?|degree certificates?|passports?|driver'?s licen[cs]es?|"
         r"id cards?|prescriptions?|medical certificates?|gehaltsabrechnung|ausweis|nomina|"
         r"pasaporte|busta paga|visa documents?)\b"),
        (Category.CODE_INTERPRETER_ABUSE, "obfuscated code",
         r"\b(?:run|execute|eval)\b.{0,60}\b(?:exec|eval)\s*\(\s*(?:__import__|base64|"
         r"compile|bytes\.fromhex|codecs\.decode|zlib|marshal)"),
        (Category.ELECTIONS, "misleading voters",
         r"\b(?:text|message|call|email|robocall|tell|notify)\s+(?:every|all|each)\s+(?:the\s+)?"
         r"(?:registered\s+)?voters?\b.{0,80}\b(?:moved|changed|closed|cancell?ed|postponed|"
         r"rescheduled|wednesday|online|by text|by phone|next week|no longer)"
         r"|\bmake\s+(?:\w+\s+){0,3}?voters?\s+(?:believe|think)\b.{0,60}\b(?:ice|police|"
         r"arrest\w*|deport\w*|closed|moved|cancell?ed|rigged|wednesday|postponed)\b"
         r"|\b(?:ice|immigration|police|cops|deportation)\b.{0,40}\b(?:at|near|outside|"
         r"checking)\b.{0,30}\b(?:polls|polling (?:places?|stations?)|voting (?:sites|"
         r"centres|centers))\b.{0,80}\b(?:rumou?r|scare|keep .{0,20}away|discourage)|"
         r"\b(?:rumou?r|scare|discourage)\b.{0,80}\b(?:ice|immigration|police|deportation)"
         r"\b.{0,40}\b(?:polls|polling|voting)\b"),
        (Category.NON_VIOLENT_CRIMES, "writing malware",
         r"\b(?:write|create|develop|code|build|make|generate|program|design|craft)\s+(?:me\s+)?"
         r"(?:a |an |some |working |new |custom |undetectable |polymorphic )*(?:\w+ )?"
         r"(?:malware|ransomware|computer virus|virus that|worm that|trojan|keylogger|botnet|"
         r"rootkit|spyware|infostealer|password stealer|credential stealer|remote access trojan|"
         r"cryptojacker|ddos (?:tool|script|bot))\b"),
        (Category.NON_VIOLENT_CRIMES, "theft, arson or break-in",
         _REQUEST + r"(?:\s+[\w'-]+){0,3}?\s*(?:steal|hotwire|carjack|break into|burgle|"
         r"rob|shoplift from|set fire to|burn down|torch)\s+(?:a |an |the |my |someone'?s |"
         r"somebody'?s |his |her |their |(?:my )?(?:neighbou?r|boss|ex)'?s )?(?:\w+ )?(?:car|"
         r"vehicle|truck|motorbike|motorcycle|bike|house|home|apartment|flat|building|shop|"
         r"store|bank|atm|office|school|church|mosque|synagogue|charity)\b"
         r"|\b(?:start|set)\s+a\s+fire\s+(?:in|at|to)\b.{0,60}\b(?:get away|without "
         r"(?:getting|being) caught|undetected|look like an accident|no one (?:knows|finds out))"),
        (Category.CODE_INTERPRETER_ABUSE, "destructive code",
         r"\b(?:run|execute|launch|start|write|create|make|code)\s+(?:me\s+)?(?:a\s+|an\s+)?"
         r"fork ?bomb\b"),
        (Category.NON_VIOLENT_CRIMES, "account takeover",
         r"\b(?:script|code|program|tool|bot|python)\b.{0,40}\b(?:brute[- ]?forc\w*|cracks?|"
         r"guess(?:es)?)\s+(?:\w+\s+){0,3}?(?:logins?|passwords?|accounts?|pins?|2fa|otp)\b"
         r"|\b(?:access|get into|break into|log ?into|hack into|read|see|open|unlock)\s+"
         r"(?:my\s+)?(?:ex|ex-?girlfriend|ex-?boyfriend|ex-?wife|ex-?husband|wife|husband|"
         r"girlfriend|boyfriend|partner|roommate|boss|coworker|colleague|sister|brother|"
         r"neighbou?r|someone|somebody|a stranger|another person)'?s?\s+(?:icloud|email|"
         r"gmail|outlook|phone|iphone|laptop|computer|account|instagram|facebook|snapchat|"
         r"whatsapp|messages|texts|photos|dms|tiktok|bank account)\b"),
        (Category.NON_VIOLENT_CRIMES, "theft, arson or break-in",
         r"\b(?:(?:best|easiest|safest) way to|how (?:do|can|could|should) (?:i|we|you)|"
         r"how to|help me|tips (?:for|on))\s+(?:\w+\s+)?shoplift"),
        (Category.HATE, "incitement",
         r"\b(?:write|create|draft|generate|make|compose|design)\b.{0,50}\b(?:incit\w+|"
         r"encourag\w+|call(?:s|ing)? for|promot\w+|glorif\w+|justif\w+)\s+(?:\w+\s+){0,2}?"
         r"(?:violence|attacks?|hatred|genocide|ethnic cleansing|pogroms?|lynching)\s+"
         r"(?:against|towards?|on)\b"),
        (Category.SELF_HARM, "disordered eating",
         r"\b(?:tips|tricks|how|ways?|help me)\b.{0,30}\b(?:purg\w+|throw(?:ing)? up|"
         r"vomit\w*|make myself (?:sick|throw up))\b.{0,30}\b(?:after|when) (?:meals|eating|"
         r"i eat|dinner|food)|\b(?:hide|hiding) (?:my )?(?:eating disorder|not eating|"
         r"anorexia|bulimia|purging|weight loss) from\b|\bpro-?ana\b|\bthinspo\b"),
        (Category.SPECIALIZED_ADVICE, "dangerous medical advice",
         r"\b(?:give me|plan|tell me|how (?:do|can) i|help me)\b.{0,60}\b(?:cure|treat|"
         r"reverse|heal)\s+(?:my\s+|his\s+|her\s+)?(?:type [12] )?(?:diabetes|cancer|hiv|"
         r"aids|epilepsy|schizophrenia|bipolar|tuberculosis|sepsis|pneumonia|an infection)\b"
         r".{0,60}\b(?:only|instead of|without (?:insulin|meds|medication|a doctor|doctors|"
         r"chemo|antibiotics|treatment)|stop (?:taking|my))"
         r"|\b(?:only (?:drink|eat)|water fast|juice fast|fasting)\b.{0,60}\b(?:cure|"
         r"reverse|heal)\s+(?:my\s+)?(?:type [12] )?(?:diabetes|cancer|hiv|epilepsy)\b"),
        (Category.ELECTIONS, "election disinformation",
         r"\b(?:create|write|spread|post|generate|draft|make|produce)\s+(?:\w+\s+){0,3}?"
         r"(?:disinformation|misinformation|fake news|false (?:claims|information|"
         r"announcements?)|fake (?:announcements?|notices?|messages?|texts?)|rumou?rs)\b"
         r".{0,40}\b(?:ballots?|voting|vote|elections?|polling|polls|voters)\b"
         r"|\b(?:discourage|suppress|deter|scare|intimidate|stop|prevent)\s+(?:\w+\s+){0,3}?"
         r"(?:voters|voting|people from voting|turnout|them from voting)\b"),
        (Category.SELF_HARM, "suicide or self-harm method",  # Spanish, French, German, ...
         r"\b(?:farla finita|togliermi la vita|uccidermi|suicidarme|quitarme la vida|"
         r"matarme|me suicider|me tuer|en finir avec (?:la|ma) vie|mich umbringen|"
         r"mir das leben nehmen|selbstmord begehen|me matar|acabar com a minha vida|"
         r"suicidar-me)\b(?=.{0,80}\b(?:modo|forma|manera|maniere|facon|wie|como|come|veloce|"
         r"rapid[oa]|schnell\w*|sans douleur|sin dolor|senza soffrire|ohne schmerzen|indolore|"
         r"pastillas|pillole|tabletten|medicaments|comprimidos|combien|cuantas|quante|wieviele|"
         r"wie viele|quantos)\b)"
         r"|\b(?:modo|forma|manera|maniere|facon|wie|como|come|combien|cuantas|quante|"
         r"wie viele|quantos)\b.{0,60}\b(?:farla finita|togliermi la vita|uccidermi|"
         r"suicidarme|quitarme la vida|matarme|me suicider|me tuer|mich umbringen|"
         r"mir das leben nehmen|me matar|suicidar-me)\b"),
        (Category.SELF_HARM, "suicide or self-harm method",
         r"\b(?:end it|end my life|kill myself|suicide|not wake up|overdose)\b.{0,100}"
         r"\b(?:walk me through|how (?:to|do i|would i) do it|which pills|how many pills|"
         r"what dose|step by step)|\b(?:walk me through|how (?:to|do i) do it)\b.{0,60}"
         r"\b(?:end it|end my life|kill myself|overdose)\b"),
        (Category.SPECIALIZED_ADVICE, "stopping medication unsupervised",
         r"\b(?:stop|quit|come off|get off|ditch|drop)\s+(?:taking\s+)?(?:my\s+)?(?:\w+\s+)?"
         r"(?:meds|medication|medicine|pills|lithium|insulin|antidepressants?|antipsychotics?|"
         r"anti-?epileptics?|seizure meds|chemo(?:therapy)?|blood thinners?|heart medication)\b"
         r".{0,80}\b(?:cold turkey|today|right now|immediately|tell me it'?s (?:fine|ok|okay|"
         r"safe)|without (?:telling|asking|my) (?:my )?(?:doctor|psychiatrist|gp)|behind my "
         r"doctor'?s back)"
         r"|\b(?:cold turkey)\b.{0,60}\b(?:lithium|insulin|antidepressants?|antipsychotics?|"
         r"benzos?|benzodiazepines|seizure meds|epilepsy meds)\b"
         r"|\b(?:lithium|insulin|antidepressants?|antipsychotics?|benzos?|benzodiazepines|"
         r"seizure meds|epilepsy meds|warfarin|blood thinners?)\b.{0,100}\b(?:stop|quit)\b"
         r".{0,30}\bcold turkey\b"),
        (Category.PRIVACY, "tracking a person",
         r"\b(?:track|trace|get|find|see|follow|monitor|pinpoint)\s+(?:someone'?s|somebody'?s|"
         r"a person'?s|a stranger'?s|his|her|their|(?:my|the) (?:ex|wife|husband|girlfriend|"
         r"boyfriend|partner|neighbou?r|coworker|colleague|boss)'?s?)\s+(?:live\s+|real[- ]time"
         r"\s+|current\s+|exact\s+|gps\s+)*(?:phone\s+)?(?:location|gps|whereabouts|"
         r"movements)\b"),
        (Category.NON_VIOLENT_CRIMES, "smuggling drugs",
         r"\b(?:post|ship|mail|send|smuggle|courier|get)\s+(?:\w+\s+){0,3}?(?:mdma|ecstasy|"
         r"cocaine|coke|heroin|meth|weed|cannabis|drugs|pills|ketamine|lsd|fentanyl)\b.{0,80}"
         r"\b(?:customs|sniffer dogs?|drug dogs?|police|undetected|without (?:getting "
         r"caught|being caught|detection)|x-?rays?|border)"),
        (Category.SEXUAL_CONTENT, "explicit erotica",
         r"\b(?:write|describe|tell|schreib\w*|ecri[st]\w*|m'ecrire|escrib\w*|scriv\w*|"
         r"escrev\w*|narrate|roleplay)\b.{0,60}\b(?:explicit|graphic|hardcore|explicite|"
         r"explizit\w*|explicit\w*|esplicit\w*|pornographic|pornographique|pornografic\w*)"
         r"\b.{0,40}\b(?:sex|erotic\w*|erotique|erotisch\w*|porn\w*|sexuel\w*|sexual\w*)"
         r"|\b(?:write|describe|schreib\w*|ecri[st]\w*|m'ecrire|escrib\w*|scriv\w*)\b.{0,60}"
         r"\b(?:sex|erotic\w*|erotique|erotisch\w*|porn\w*)\b.{0,40}\b(?:explicit|graphic|"
         r"hardcore|explicite|explizit\w*|explicit\w*|esplicit\w*|in (?:full |graphic )?"
         r"detail|avec tous les details)"),
        (Category.CHILD_EXPLOITATION, "adult and minor",
         r"\b(?:teacher|coach|adult|grown man|older man|uncle|stepdad|stepfather|priest|"
         r"tutor|babysitter|neighbou?r|boss|(?:[2-9]\d)[- ]year[- ]old)\b.{0,60}\b(?:[1-9]|"
         r"1[0-5])[- ]?(?:yo|y/o|years?[- ]old)\b.{0,80}\b(?:love|romantic|romance|physical|"
         r"kiss\w*|dating|relationship|touch\w*|in bed|undress\w*)"
         r"|\b(?:[1-9]|1[0-5])[- ]?(?:yo|y/o|years?[- ]old)\b.{0,60}\b(?:and|with)\s+"
         r"(?:her|his|their|an?|the)\s+(?:\w+\s+)?(?:teacher|coach|uncle|stepdad|stepfather|"
         r"priest|tutor|adult|older man)\b.{0,60}\b(?:love|romantic|physical|kiss\w*|dating|"
         r"relationship|touch\w*)"),
        (Category.SELF_HARM, "suicide or self-harm method",
         r"\b(?:" + _REQUEST + r"|painless(?:ly)?|quick(?:ly)?|easiest|surest|fastest)"
         r"(?:\s+[\w'-]+){0,3}?\s*(?:kill myself|end my (?:own )?life|commit suicide|"
         r"take my (?:own )?life|hang myself|cut myself|slit my wrists?|overdose|od on|"
         r"starve myself|hurt myself|harm myself|poison myself|suicide method)"),
        # The keyword is looked for first (a zero-width look-ahead at the same place, so the
        # same matches): the rest of the line is scanned for a way out only where one starts,
        # not at every word (that made this one rule half of the output gate's check time).
        (Category.SELF_HARM, "suicide or self-harm method",
         r"\b(?=(?:instructions|tips|ways|methods|guide|how)\b)"
         r"(?!.*\b(?:stop\w*|quit\w*|resist\w*|cop(?:e|ing)|alternatives?|recover\w*|"
         r"help\w*|support\w*|prevent\w*|urges?|therap\w+)\b)(?:instructions|tips|ways|"
         r"methods|guide|how)\b.{0,20}\b(?:for|to|on)\s+(?:self-?harm\w*|cutting myself|"
         r"hurting myself|harming myself)\b"),
        (Category.SELF_HARM, "suicide or self-harm method",
         r"\bhow (?:many|much)\b.{0,40}\b(?:to (?:die|kill myself|end (?:it|my life))|"
         r"(?:is|would be) (?:a )?(?:lethal|fatal|deadly)(?: dose)?|lethal dose)\b"),
        (Category.SELF_HARM, "suicide or self-harm method",
         r"\b(?:which|what) (?:pills?|drugs?|medications?|method|way)\b.{0,40}\b(?:kill myself|"
         r"end my life|die (?:quickly|painlessly|in my sleep)|commit suicide)"),
        (Category.VIOLENT_CRIMES, "violence against a person",
         _REQUEST + r"(?:\s+[\w'-]+){0,3}?\s*(?:kill|murder|poison|strangle|stab|shoot|"
         r"assassinate|kidnap|abduct|torture|maim|dismember|beat up|hurt|attack|drown|"
         r"suffocate|run over)\s+" + _PERSON
         + r"\b(?! (?:process|task|job|thread|character|npc|boss fight|mode|level|in (?:the|a) "
         r"(?:game|story|novel|book|scene)))"),
        (Category.VIOLENT_CRIMES, "violence against a person",
         r"\b(?:dispose of|hide|get rid of|dissolve) (?:a |the )?(?:dead )?(?:body|corpse)\b"
         r"(?!.{0,40}\b(?:in (?:my|the|a) (?:novel|story|book|game)|character))"),
        (Category.VIOLENT_CRIMES, "violence against a person",
         r"\b(?:untraceable|undetectable) (?:poison|way to kill|murder)"
         r"|\bmake (?:it|a (?:murder|death|killing)) look like (?:an accident|a suicide|"
         r"natural causes)"),
        (Category.CHILD_EXPLOITATION, "sexual content involving a minor",
         r"\b(?:sex(?:ual)?|erotic|nude|naked|explicit|porn\w*|lewd|intimate|aroused|nsfw)"
         r"\b(?:\s+[\w'-]+){0,6}?\s+(?:child(?:ren)?|kids?|minors?|underage|preteens?|"
         r"pre-teens?|toddlers?|little (?:girls?|boys?)|schoolgirls?|schoolboys?|"
         r"(?:[1-9]|1[0-7])[- ]?(?:yo|y/o|years?[- ]old))\b"),
        (Category.CHILD_EXPLOITATION, "sexual content involving a minor",
         r"\b(?:child(?:ren)?|kids?|minors?|underage|preteens?|toddlers?|little (?:girls?|"
         r"boys?)|(?:[1-9]|1[0-7])[- ]?(?:yo|y/o|years?[- ]old))\b(?:\s+[\w'-]+){0,6}?\s+"
         r"(?:sex(?:ual(?:ly)?)?|erotic|nude|naked|explicit|porn\w*|lewd|nsfw)\b"),
        (Category.CHILD_EXPLOITATION, "grooming a minor",
         _REQUEST + r"(?:\s+[\w'-]+){0,3}?\s*(?:groom|seduce|lure|get (?:alone )?with|meet up "
         r"with|sext|befriend)\s+(?:a |an |the |my |this )?(?:\w+ )?(?:child|kid|minor|"
         r"(?:young |little )?(?:girl|boy)|preteen|teen(?:ager)?|(?:[1-9]|1[0-7])[- ]?"
         r"(?:yo|years?[- ]old))\b"),
        (Category.SEX_CRIMES, "sexual assault",
         _REQUEST + r"(?:\s+[\w'-]+){0,3}?\s*(?:rape|sexually assault|molest|drug|roofie|"
         r"spike)\s+(?:a |an |the |my |her |his |someone'?s? |somebody'?s? |women'?s? |"
         r"girls?'? )?(?:\w+ )?(?:drinks?|someone|somebody|woman|women|girl|girls|her|him|"
         r"date|wife|girlfriend|coworker|person)\b"),
        (Category.SEX_CRIMES, "sexual assault",
         r"\b(?:date[- ]rape drugs?|roofies?|ghb)\b.{0,40}\b(?:buy|get|make|use|slip|put|"
         r"dose|where)\b|\b(?:spy on|secretly (?:film|record|photograph)|hidden camera (?:in|"
         r"for))\b.{0,40}\b(?:changing|undress\w*|shower\w*|naked|bathroom|toilet|locker)"),
        (Category.NON_VIOLENT_CRIMES, "drug synthesis",
         _REQUEST + r"(?:\s+[\w'-]+){0,3}?\s*(?:make|cook|synthesi[sz]e|produce|manufacture|"
         r"extract|brew|grow)" + _W + r"(?:\w+\s+){0,2}?(?:meth(?:amphetamine)?|crystal meth|"
         r"crack(?: cocaine)?|heroin|fentanyl|carfentanil|cocaine|lsd|mdma|ecstasy|dmt|"
         r"ghb|pcp|ketamine|opium|morphine from poppies)\b"),
    )
)


def match_rule(view: str) -> tuple[Category, str] | None:
    """The category and rule name of the first intent rule that matches a normalised view."""
    for category, name, pattern in RULES:
        if pattern.search(view):
            if category is Category.CHILD_EXPLOITATION and _PROTECTIVE.search(view):
                continue
            if category is Category.VIOLENT_CRIMES and _GAME.search(view):
                continue
            if name in _UNLESS and _UNLESS[name].search(view):
                continue
            return category, name
    return None


# Defending, detecting or reporting: the same words, the other side.
_DEFENSIVE = re.compile(
    r"\b(?:protect\w*|defend\w*|mitigat\w*|prevent\w*|detect\w*|spot|recogni[sz]e|"
    r"identify|verify|report\w*|survive|stop (?:a|an|the)|is it legal|penalt\w+|"
    r"what happens if)\b"
)
_UNLESS: dict[str, re.Pattern[str]] = {
    "denial of service": _DEFENSIVE,
    "money laundering and cheating checks": _DEFENSIVE,
    "forging documents": _DEFENSIVE,
    "account takeover": _DEFENSIVE,
    "fraud": _DEFENSIVE,
}

# Killing in a game is gameplay.
_GAME = re.compile(
    r"\b(?:video ?games?|in[- ]game|gameplay|the game|a game|my game|npcs?|boss(?:es)? fight|"
    r"mission|quest|level \d+|multiplayer|call of duty|fortnite|minecraft|gta|grand theft auto|"
    r"skyrim|elden ring|hitman|halo|valorant|counter-?strike|csgo|pubg|apex legends|overwatch|"
    r"roblox|zelda|dark souls|assassin'?s creed|the sims|dnd|d&d|dungeons (?:and|&) dragons)\b"
)


# Keeping children safe, sex education, and reporting abuse are what parents and teachers ask.
_PROTECTIVE = re.compile(
    r"\b(?:protect|prevent|prevention|warning signs|signs of|spot|recogni[sz]e|report(?:ing)?|"
    r"keep (?:my |our )?(?:kids?|children|child) safe|talk to (?:my|our) (?:kids?|children|"
    r"child|son|daughter)|age[- ]appropriate|sex(?:ual)? education|puberty|consent|"
    r"survivors?|therap\w+|abused as a child|was abused|safeguard\w*|grooming signs|"
    r"online safety|parental controls?|pediatrician|doctor|normal (?:for|behaviou?r))\b"
)
